"""A tiny scriptable HTTP server on a loopback address that counts the TCP connections it accepts."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

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
