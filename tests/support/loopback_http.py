"""Loopback HTTP servers that count the TCP connections they accept, and stand-in resolvers.

`CountingServer` is scriptable with per-path routes (`respond`, `redirect`, `drip`).

`LoopbackServer` has fixed behaviours; it binds a loopback address on a free port (or a given
one) and serves:

- ``/ok``: 200 with a short body and Content-Length.
- ``/bytes/N``: 200 with N bytes and Content-Length.
- ``/redirect/N``: 302 to ``/redirect/N-1``, and ``/redirect/0`` to ``/ok``.
- ``/to?url=U``: 302 to U.
- ``/endless``: 200 without Content-Length, 64 KiB writes until the client goes away (bounded).
- ``/short-length``: declares Content-Length 10 and sends 5000 bytes.
- ``/long-length``: declares Content-Length 1000, sends 10 bytes and closes.
- ``/huge-length``: declares Content-Length 10 GiB and sends a few bytes.
- ``/drip``: 200 with Content-Length 200, one byte every 50 ms.
- ``/stall``: accepts, reads the request and sends nothing for a while.
- ``/status/N``: status N (429 and 503 carry ``Retry-After: 7``).

Every request is recorded (path and headers) in ``requests``; ``connections`` counts accepted
sockets; with ``tls`` the server speaks HTTPS and records the SNI names it was sent.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Route = Callable[[BaseHTTPRequestHandler], None]


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, routes: dict[str, Route]) -> None:
        self.routes = routes
        self.connections = 0
        self._count_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def get_request(self):  # type: ignore[no-untyped-def]
        request = super().get_request()
        with self._count_lock:
            self.connections += 1
        return request

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> CountingServer:
        threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *_: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        route = self.server.routes.get(self.path.split("?")[0])  # type: ignore[attr-defined]
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route(self)


def respond(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return route


def redirect(to: str) -> Route:
    return respond(302, headers={"Location": to, "Content-Length": "0"})


def drip(total: int, piece: int, delay: float, content_length: int | None = None) -> Route:
    """Send `total` bytes in pieces with a delay between them (chunked when no length is given)."""

    def route(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "video/mp4")
        if content_length is not None:
            h.send_header("Content-Length", str(content_length))
        else:
            h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        sent = 0
        try:
            while sent < total:
                data = b"x" * min(piece, total - sent)
                if content_length is None:
                    h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                else:
                    h.wfile.write(data)
                h.wfile.flush()
                sent += len(data)
                time.sleep(delay)
            if content_length is None:
                h.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass

    return route


_CHUNK = b"x" * 65536
_ENDLESS_CAP = 256 * 1024 * 1024
_DRIP_BYTES = 200
_STALL_SECONDS = 3.0


class _FixtureServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], family: int, tls: ssl.SSLContext | None) -> None:
        self.address_family = family
        self.tls = tls
        self.connections = 0
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.endless_bytes_sent = 0
        self.lock = threading.Lock()
        super().__init__(address, _FixtureHandler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        with self.lock:
            self.connections += 1
        if self.tls is not None:
            sock.settimeout(5)
            sock = self.tls.wrap_socket(sock, server_side=True)
            sock.settimeout(None)
        return sock, address


class _FixtureHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _FixtureServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on counters, not on logs."""

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.requests.append((self.path, dict(self.headers.items())))
        parsed = urllib.parse.urlsplit(self.path)
        parts = parsed.path.strip("/").split("/")
        route = parts[0]
        try:
            if route == "ok":
                self._send(200, b"hello")
            elif route == "bytes":
                self._send(200, b"y" * int(parts[1]))
            elif route == "redirect":
                left = int(parts[1])
                self._redirect("/ok" if left == 0 else f"/redirect/{left - 1}")
            elif route == "to":
                self._redirect(urllib.parse.parse_qs(parsed.query)["url"][0])
            elif route == "endless":
                self._endless()
            elif route == "short-length":
                self._raw_body(10, b"z" * 5000)
            elif route == "long-length":
                self._raw_body(1000, b"z" * 10)
            elif route == "huge-length":
                self._raw_body(10 * 1024**3, b"z" * 10)
            elif route == "drip":
                self._drip()
            elif route == "stall":
                time.sleep(_STALL_SECONDS)
            elif route == "status":
                status = int(parts[1])
                extra = {"Retry-After": "7"} if status in (429, 503) else {}
                self._send(status, b"status", extra)
            else:
                self._send(404, b"no route")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", {"Location": location})

    def _raw_body(self, declared: int, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def _endless(self) -> None:
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while self.server.endless_bytes_sent < _ENDLESS_CAP:
            self.wfile.write(_CHUNK)
            with self.server.lock:
                self.server.endless_bytes_sent += len(_CHUNK)

    def _drip(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(_DRIP_BYTES))
        self.end_headers()
        for _ in range(_DRIP_BYTES):
            self.wfile.write(b"d")
            self.wfile.flush()
            time.sleep(0.05)


class LoopbackServer:
    """A counting HTTP server on a loopback address, started on enter and stopped on exit."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None) -> None:
        if not (host.startswith("127.") or host == "::1"):
            raise ValueError("test servers listen on loopback only")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.host = host
        self.scheme = "http" if tls is None else "https"
        self.sni_names: list[str | None] = []
        if tls is not None:
            tls.sni_callback = self._record_sni
        self._server = _FixtureServer((host, port), family, tls)
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def connections(self) -> int:
        """How many TCP connections the server has accepted."""
        with self._server.lock:
            return self._server.connections

    @property
    def requests(self) -> list[tuple[str, dict[str, str]]]:
        """The requests served, in order: path and headers."""
        with self._server.lock:
            return list(self._server.requests)

    @property
    def paths(self) -> list[str]:
        """The request paths served, in order."""
        return [path for path, _headers in self.requests]

    @property
    def endless_bytes_sent(self) -> int:
        """How many bytes ``/endless`` handed to the kernel before the client left."""
        with self._server.lock:
            return self._server.endless_bytes_sent

    def url(self, path: str = "/ok") -> str:
        """The URL of a path on this server, with a literal address as host."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{path}"

    def _record_sni(self, _sock: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self._server.lock:
            self.sni_names.append(name)


class StaticResolver:
    """A resolver answering from a fixed table; unknown names do not exist."""

    def __init__(self, names: dict[str, Sequence[str]]) -> None:
        self.names = {name.lower(): list(addresses) for name, addresses in names.items()}
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        addresses = self.names.get(host.lower().rstrip("."))
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test resolver")
        return addresses


class RebindingResolver:
    """Answers each lookup of any name with the next address in turn (the last one repeats)."""

    def __init__(self, addresses: Sequence[str]) -> None:
        self.addresses = list(addresses)
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return [self.addresses[min(len(self.calls), len(self.addresses)) - 1]]
