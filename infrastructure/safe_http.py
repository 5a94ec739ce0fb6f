"""The SSRF guard and the bounded streaming fetcher for every URL the service fetches itself.

`UrlPolicy` decides whether a URL may be fetched: http/https only, no credentials in the
authority, no numeric host spellings other than canonical addresses, no ``localhost`` names, and
every address the host resolves to must be permitted. An address is permitted when it is inside
an explicitly allowed CIDR (``MEDIATASKS_URL_ALLOW_CIDRS``, for tests), or else when it passes
both ssrfguard's IANA-derived table (which decodes IPv4-mapped, NAT64, 6to4 and Teredo wrappers
and names the cloud metadata endpoints) and ``ipaddress``'s ``is_global``.

`SafeFetcher` fetches with one `httpx.Client` whose connections are pinned: each hop is resolved
and checked once here, and the transport connects only to those checked addresses (no second
lookup, so no DNS rebinding), while TLS still verifies the certificate and sends SNI for the
hostname. Redirects are followed by hand, each hop checked again; bodies are read in bounded
chunks under a byte cap and an overall deadline that also caps every socket read.
"""

from __future__ import annotations

import contextvars
import ipaddress
import os
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import h11
import httpcore
import httpx
import ssrfguard
from httpcore._backends.sync import SyncStream
from ssrfguard.httpx import SafeBackend, SafeTransport

from application.ports.errors import MediaError, PermanentMediaError, TransientMediaError
from infrastructure.retry_after import retry_after_seconds

__all__ = [
    "ALLOW_CIDRS_ENV",
    "FetchedResponse",
    "PinnedTarget",
    "Resolver",
    "SafeFetcher",
    "UrlPolicy",
    "system_resolver",
]

ALLOW_CIDRS_ENV = "MEDIATASKS_URL_ALLOW_CIDRS"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: Resolves a host name (never a literal address) to address strings; raises ``socket.gaierror``.
Resolver = Callable[[str, int], Sequence[str]]

_ALL_PORTS = frozenset(range(1, 65536))
_DEFAULT_PORTS = {"http": 80, "https": 443}
_MIB = 1024 * 1024
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
#: A last label that URL parsers (WHATWG, inet_aton) read as a number: decimal, octal or hex.
_NUMERIC_LABEL = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)

#: The monotonic deadline of the download running on this thread, read by every socket operation.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("safe_http_deadline", default=None)


class _GlobalOnlyPolicy(ssrfguard.Policy):
    """ssrfguard's policy, additionally requiring ``is_global`` outside the allowed networks."""

    def check_address(self, address: str | IPAddress) -> None:
        parsed = ipaddress.ip_address(address) if isinstance(address, str) else address
        if any(parsed.version == net.version and parsed in net for net in self.allowed_networks):
            return
        super().check_address(parsed)
        if not parsed.is_global:
            raise ssrfguard.BlockedAddressError(str(parsed), "the address is not globally reachable")


@dataclass(frozen=True)
class PinnedTarget:
    """A URL's origin after the check: the host as the transport sees it and its checked addresses."""

    host: str
    port: int
    addresses: tuple[ssrfguard.Address, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """The platform's resolver (``getaddrinfo``), every distinct address in its order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _refused(url: str, reason: str, **details: Any) -> PermanentMediaError:
    return PermanentMediaError("url_not_allowed", reason, details={"host": _host_of(url), **details})


def _host_of(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def _parse_networks(cidrs: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    networks = []
    for cidr in cidrs:
        try:
            networks.append(ipaddress.ip_network(cidr.strip()))
        except ValueError as bad:
            raise ValueError(f"{ALLOW_CIDRS_ENV}: {cidr!r} is not a CIDR network: {bad}") from bad
    return tuple(networks)


class UrlPolicy:
    """Which URLs the service may fetch; ``check_url`` resolves once and checks every address.

    Userinfo (``http://user@host``) is refused: it only ever serves to disguise the host.
    Numeric hosts other than a canonical address (``2130706433``, ``0177.0.0.1``, ``0x7f.1``,
    ``127.1``) are refused whatever they decode to, because parsers disagree on them; the
    decoded address is reported in the error details. ``localhost`` and ``*.localhost`` names
    are refused without asking a resolver. ``allow_cidrs`` is the only way to reach a denied
    range; an entry does not cross address families (``127.0.0.1/32`` does not permit
    ``::ffff:127.0.0.1``).
    """

    def __init__(
        self,
        allow_cidrs: Sequence[str] = (),
        allowed_schemes: Sequence[str] = ("http", "https"),
        *,
        resolver: Resolver | None = None,
    ) -> None:
        self.allowed_schemes = frozenset(s.lower() for s in allowed_schemes)
        self._resolver: Resolver = resolver if resolver is not None else system_resolver
        self.guard = _GlobalOnlyPolicy(
            allowed_schemes=self.allowed_schemes,
            allowed_networks=_parse_networks(allow_cidrs),
            allowed_ports=_ALL_PORTS,
        )

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, *, resolver: Resolver | None = None
    ) -> UrlPolicy:
        """Build the policy with the allow list from ``MEDIATASKS_URL_ALLOW_CIDRS`` (comma separated)."""
        raw = (os.environ if environ is None else environ).get(ALLOW_CIDRS_ENV, "")
        cidrs = [part for part in re.split(r"[,\s]+", raw) if part]
        return cls(allow_cidrs=cidrs, resolver=resolver)

    def check_url(self, url: str) -> list[IPAddress]:
        """Resolve the URL's host and return its addresses, all permitted, or raise.

        Raises `PermanentMediaError` ``invalid_url`` (not http(s), malformed, host does not
        exist) or ``url_not_allowed`` (any forbidden address or spelling), and
        `TransientMediaError` ``dns_unavailable`` when the resolver fails temporarily.
        """
        return [address.ip for address in self.resolve(url).addresses]

    def resolve(self, url: str) -> PinnedTarget:
        """Check the URL, resolve its host once, and return the checked addresses to pin."""
        self._check_shape(url)
        try:
            target = self.guard.check_url(url)
            addresses = ssrfguard.resolve(target, policy=self.guard, resolver=self._lookup)
        except ssrfguard.SSRFGuardError as refused:
            raise _refused(url, str(getattr(refused, "reason", refused))) from refused
        except socket.gaierror as failed:
            if failed.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
                raise PermanentMediaError(
                    "invalid_url", "the host does not resolve", details={"host": _host_of(url)}
                ) from failed
            raise TransientMediaError(
                "dns_unavailable", f"name resolution failed: {failed}", details={"host": _host_of(url)}
            ) from failed
        return PinnedTarget(host=_transport_host(url), port=target.port, addresses=addresses)

    def _check_shape(self, url: str) -> None:
        try:
            split = urllib.parse.urlsplit(url)
            split.port  # noqa: B018 - parsing the port is the check
        except ValueError as bad:
            raise PermanentMediaError("invalid_url", f"the URL cannot be parsed: {bad}") from bad
        scheme = split.scheme.lower()
        if scheme not in self.allowed_schemes:
            raise PermanentMediaError(
                "invalid_url",
                f"scheme {scheme or '(none)'!r} is not one of {sorted(self.allowed_schemes)}",
            )
        host = (split.hostname or "").rstrip(".")
        if not host:
            raise PermanentMediaError("invalid_url", "the URL has no host")
        if host == "localhost" or host.endswith(".localhost"):
            raise _refused(url, "localhost names always point at this machine")
        if ":" not in host and _NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
            _check_canonical_ipv4(url, host)

    def _lookup(self, host: str, port: int, *_getaddrinfo_args: int) -> list[tuple[Any, ...]]:
        """getaddrinfo's shape for ssrfguard: literals answered here, names by the resolver."""
        try:
            addresses: Sequence[str] = [str(ipaddress.ip_address(host))]
        except ValueError:
            addresses = self._resolver(host, port)
        answers: list[tuple[Any, ...]] = []
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%")[0])
            if ip.version == 4:
                answers.append((socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port)))
            else:
                answers.append((socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(ip), port, 0, 0)))
        return answers


def _check_canonical_ipv4(url: str, host: str) -> None:
    """Refuse a host whose last label is a number unless it is a canonical dotted quad."""
    try:
        ipaddress.IPv4Address(host)
        return
    except ValueError:
        pass
    try:
        decoded: str | None = socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        decoded = None
    raise _refused(
        url,
        "a numeric host must be a canonical dotted-quad address; other spellings are refused whatever they decode to",
        decodes_to=decoded,
    )


def _transport_host(url: str) -> str:
    """The host exactly as httpcore will hand it to the network backend."""
    try:
        return httpx.URL(url).raw_host.decode("ascii")
    except httpx.InvalidURL as bad:
        raise PermanentMediaError("invalid_url", f"the URL cannot be parsed: {bad}") from bad


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else deadline - time.monotonic()


def _capped(timeout: float | None, kind: type[Exception], deadline: float | None = None) -> float | None:
    """The smaller of a socket timeout and the time left before the deadline (by default, this thread's)."""
    left = _remaining(_DEADLINE.get() if deadline is None else deadline)
    if left is None:
        return timeout
    if left <= 0:
        raise kind("the download deadline has passed")
    return left if timeout is None else min(timeout, left)


#: Bytes asked of the socket per read: httpcore asks 64 KiB, which costs a trip through h11 per 64 KiB
#: (a quarter of the CPU time of a large download, docs/performance.md); 1 MiB reads cut that 16-fold.
SOCKET_READ_BYTES = _MIB


class _DeadlineStream(httpcore.NetworkStream):
    """httpcore's own stream, with every read, write and handshake capped by the deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max(max_bytes, SOCKET_READ_BYTES), _capped(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _capped(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        tls = self._inner.start_tls(ssl_context, server_hostname, _capped(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(tls)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def body_socket(self) -> socket.socket | None:
        """The socket (or TLS socket) this stream reads, when reading it directly reads the same bytes.

        Only httpcore's own socket stream qualifies: a TLS-in-TLS stream's socket is the outer tunnel.
        """
        return self._inner.get_extra_info("socket") if isinstance(self._inner, SyncStream) else None


class _DeadlineBackend(SafeBackend):
    """ssrfguard's pinning backend, with the connect timeout and the stream under the deadline."""

    connections_attempted = 0

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        timeout = _capped(timeout, httpcore.ConnectTimeout)
        self.connections_attempted += 1
        return _DeadlineStream(super().connect_tcp(host, port, timeout, local_address, socket_options))


class _PinnedTransport(SafeTransport):
    """ssrfguard's transport over a pool whose backend connects only to pinned addresses."""

    def __init__(self, *, policy: ssrfguard.Policy, resolver: Resolver, ssl_context: ssl.SSLContext | None) -> None:
        if ssl_context is None:
            ssl_context = httpx.create_ssl_context(trust_env=False)
        super().__init__(policy=policy, resolver=resolver, verify=ssl_context, trust_env=False)
        limits = httpx.Limits()
        self._backend = _DeadlineBackend(policy=policy, resolver=resolver)
        self._pool = httpcore.ConnectionPool(
            ssl_context=ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=self._backend,
        )

    @property
    def connections_attempted(self) -> int:
        """TCP connections this transport has tried to open (each to a checked address)."""
        return self._backend.connections_attempted


class _PinTable:
    """Checked addresses per (host, port), the latest check winning; the transport's only resolver."""

    _MAX_ENTRIES = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pins: OrderedDict[tuple[str, int], tuple[ssrfguard.Address, ...]] = OrderedDict()

    def pin(self, target: PinnedTarget) -> None:
        with self._lock:
            key = (target.host, target.port)
            self._pins[key] = target.addresses
            self._pins.move_to_end(key)
            while len(self._pins) > self._MAX_ENTRIES:
                self._pins.popitem(last=False)

    def lookup(
        self, host: str, port: int, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
    ) -> list[tuple[Any, ...]]:
        with self._lock:
            addresses = self._pins.get((host, port))
        if addresses is None:
            raise socket.gaierror(socket.EAI_NONAME, f"{host}:{port} was not checked before use")
        return [(a.family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", a.sockaddr) for a in addresses]


def _status_error(response: httpx.Response) -> MediaError | None:
    """The classified error for a final (non-redirect) status, or None for 2xx."""
    status = response.status_code
    details = {"status": status, "host": response.url.host}
    if 200 <= status < 300:
        return None
    if status in (404, 410):
        return PermanentMediaError("media_not_found", f"the server answered {status}", details=details)
    if status in (401, 403):
        return PermanentMediaError("media_private", f"the server answered {status}", details=details)
    if status == 429:
        return TransientMediaError(
            "rate_limited",
            "the server answered 429",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            details=details,
        )
    if status == 408:
        return TransientMediaError("timeout", "the server answered 408", details=details)
    if status >= 500:
        return TransientMediaError(
            "upstream_unavailable",
            f"the server answered {status}",
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
            details=details,
        )
    return PermanentMediaError("media_not_found", f"the server answered {status}", details=details)


@contextmanager
def _classified_transport_errors(url: httpx.URL) -> Iterator[None]:
    """Turn httpx/httpcore failures and ssrfguard refusals into classified media errors."""
    details = {"host": url.host}
    try:
        yield
    except ssrfguard.SSRFGuardError as refused:
        reason = str(getattr(refused, "reason", refused))
        raise PermanentMediaError("url_not_allowed", reason, details=details) from refused
    except (httpx.TimeoutException, httpcore.TimeoutException) as timed_out:
        raise TransientMediaError("timeout", f"timed out: {timed_out}", details=details) from timed_out
    except (httpx.TransportError, httpcore.NetworkError, httpcore.ProtocolError) as failed:
        raise TransientMediaError("connection_failed", f"connection failed: {failed}", details=details) from failed


class FetchedResponse:
    """A final 2xx response: status, headers, URL after redirects, and a bounded body iterator."""

    def __init__(
        self,
        response: httpx.Response,
        *,
        redirects: tuple[str, ...],
        max_bytes: int,
        chunk_size: int,
        deadline: float,
        read_timeout: float | None = None,
    ) -> None:
        self._response = response
        self._max_bytes = max_bytes
        self._chunk_size = chunk_size
        self._deadline = deadline
        self._read_timeout = read_timeout
        self.status_code = response.status_code
        self.headers = response.headers
        self.final_url = str(response.url)
        self.redirects = redirects
        self.bytes_read = 0

    def iter_bytes(self) -> Iterator[bytes]:
        """Yield the body as it arrives, in chunks of at most ``chunk_size`` bytes.

        Raises ``too_large`` once more than ``max_bytes`` have arrived (never yielding past the
        cap) and ``timeout`` when the overall deadline passes. A plain ``Content-Length`` body is
        read straight from the connection's socket into chunk-sized buffers (`_direct_body`);
        any other (chunked, encoded) goes through h11.
        """
        direct = _direct_body_source(self._response)
        with _classified_transport_errors(self._response.url):
            if direct is not None:
                yield from self._direct_body(*direct)
                return
            for piece in self._response.iter_bytes():
                self._count(len(piece))
                for start in range(0, len(piece), self._chunk_size):
                    yield piece[start : start + self._chunk_size]

    def _count(self, length: int) -> None:
        self.bytes_read += length
        if self.bytes_read > self._max_bytes:
            raise PermanentMediaError(
                "too_large",
                f"the body is larger than {self._max_bytes} bytes",
                details={"max_bytes": self._max_bytes, "bytes_read": self.bytes_read},
            )
        if time.monotonic() > self._deadline:
            raise TransientMediaError("timeout", "the download deadline has passed")

    def _direct_body(self, received: bytes, sock: socket.socket, length: int) -> Iterator[bytes]:
        """``length`` body bytes: those h11 already received, then ``recv_into`` buffers of ``chunk_size``.

        One copy per byte (kernel to buffer) instead of h11's three; the same socket, so the same
        pinned, checked connection; each read capped by the read timeout and the deadline. A chunk
        is handed on when full, or after `_CHUNK_PATIENCE_SECONDS` with something in it (a slow
        server still shows progress). The connection is not reused afterwards (h11 never saw the
        body end, so httpcore closes it).
        """
        received = received[:length]
        for start in range(0, len(received), self._chunk_size):
            piece = received[start : start + self._chunk_size]
            self._count(len(piece))
            yield piece
        remaining = length - len(received)
        while remaining > 0:
            buffer = bytearray(min(self._chunk_size, remaining))
            view = memoryview(buffer)
            filled, started = 0, time.monotonic()
            while filled < len(buffer):
                sock.settimeout(_capped(self._read_timeout, httpcore.ReadTimeout, self._deadline))
                try:
                    got = sock.recv_into(view[filled:])
                except TimeoutError as timed_out:  # as httpcore maps its own socket reads
                    raise httpcore.ReadTimeout(str(timed_out)) from timed_out
                except OSError as failed:
                    raise httpcore.ReadError(str(failed)) from failed
                if got == 0:
                    raise httpcore.RemoteProtocolError(
                        f"the server closed the connection {remaining - filled} bytes before the body's end"
                    )
                filled += got
                if time.monotonic() - started > _CHUNK_PATIENCE_SECONDS:
                    break
            view.release()
            remaining -= filled
            self._count(filled)
            if filled < len(buffer):
                del buffer[filled:]
            yield buffer  # a fresh bytearray per chunk (bytes-like, never written again)


#: How long a direct body read waits to fill a chunk before handing on what it has.
_CHUNK_PATIENCE_SECONDS = 0.1


def _direct_body_source(response: httpx.Response) -> tuple[bytes, socket.socket, int] | None:
    """(body bytes h11 already holds, the socket, Content-Length) when the body may be read directly.

    Only for a plain ``Content-Length`` body (no transfer or content coding) on an HTTP/1.1
    connection whose h11 state machine stands at the body's start; anything else returns None
    and the body goes through h11. The connection is reached through httpcore's private fields,
    checked at each step (httpcore and h11 are pinned in pyproject.toml).
    """
    headers = response.headers
    declared = headers.get("content-length", "").strip()
    if not declared.isdigit() or "transfer-encoding" in headers:
        return None
    if headers.get("content-encoding", "identity").strip().lower() != "identity":
        return None
    stream = response.extensions.get("network_stream")
    connection = getattr(
        getattr(getattr(response.stream, "_httpcore_stream", None), "_stream", None), "_connection", None
    )
    state = getattr(connection, "_h11_state", None)
    if not isinstance(stream, _DeadlineStream) or not isinstance(state, h11.Connection):
        return None
    if getattr(connection, "_network_stream", None) is not stream or state.their_state is not h11.SEND_BODY:
        return None
    sock = stream.body_socket()
    if sock is None:
        return None
    received, _closed = state.trailing_data
    return received, sock, int(declared)


class SafeFetcher:
    """Fetches URLs through the policy with pinned connections, redirect re-checks and limits.

    Use as a context manager; it owns one `httpx.Client`. Safe to share between threads.
    """

    def __init__(
        self,
        policy: UrlPolicy,
        connect_timeout: float = 10,
        read_timeout: float = 30,
        deadline_seconds: float = 3600,
        max_redirects: int = 5,
        *,
        user_agent: str = "mediatasks/1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``ssl_context`` replaces the default verifying context (a private CA, in tests)."""
        self.policy = policy
        self.deadline_seconds = deadline_seconds
        self.read_timeout = read_timeout
        self.max_redirects = max_redirects
        self._pins = _PinTable()
        self.transport = _PinnedTransport(policy=policy.guard, resolver=self._pins.lookup, ssl_context=ssl_context)
        self._client = httpx.Client(
            transport=self.transport,
            headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
            follow_redirects=False,
            trust_env=False,
        )

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    @contextmanager
    def stream(
        self,
        url: str,
        *,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        chunk_size: int = _MIB,
        deadline_seconds: float | None = None,
    ) -> Iterator[FetchedResponse]:
        """GET ``url``, following up to ``max_redirects`` checked redirects, and yield the 2xx response.

        Errors: see `UrlPolicy.check_url` for refusals; ``too_large`` (Content-Length or body
        over ``max_bytes``); ``media_not_found`` (404/410, other 4xx), ``media_private``
        (401/403), ``rate_limited`` (429, with ``retry_after``), ``upstream_unavailable`` (5xx),
        ``connection_failed`` (refused, reset, cut short), ``timeout`` (connect/read timeout or
        the overall deadline, ``deadline_seconds`` or the fetcher's), ``too_many_redirects``.
        """
        deadline = time.monotonic() + (deadline_seconds or self.deadline_seconds)
        token = _DEADLINE.set(deadline)
        try:
            response, redirects = self._follow(url, dict(headers or {}))
            try:
                self._refuse_declared_oversize(response, max_bytes)
                yield FetchedResponse(
                    response,
                    redirects=redirects,
                    max_bytes=max_bytes,
                    chunk_size=chunk_size,
                    deadline=deadline,
                    read_timeout=self.read_timeout,
                )
            finally:
                response.close()
        finally:
            _DEADLINE.reset(token)

    def get_bytes(self, url: str, max_bytes: int, *, headers: Mapping[str, str] | None = None) -> bytes:
        """The whole body of a small resource (subtitles, manifests), bounded by ``max_bytes``."""
        with self.stream(url, max_bytes=max_bytes, headers=headers) as response:
            return b"".join(response.iter_bytes())

    def post(
        self,
        url: str,
        content: bytes,
        *,
        headers: Mapping[str, str],
        deadline_seconds: float,
        max_answer_bytes: int = 64 * 1024,
    ) -> int:
        """POST once to the checked, pinned address (a redirect is an answer, never followed); the status.

        Errors as for `stream`'s transport: ``url_not_allowed``/``invalid_url`` before any connection,
        ``timeout`` (connect or the overall ``deadline_seconds``), ``connection_failed``.
        """
        token = _DEADLINE.set(time.monotonic() + deadline_seconds)
        try:
            target = self.policy.resolve(url)
            self._pins.pin(target)
            try:
                request = self._client.build_request("POST", url, content=content, headers=dict(headers))
            except httpx.InvalidURL as bad:
                raise PermanentMediaError("invalid_url", f"the URL cannot be parsed: {bad}") from bad
            with _classified_transport_errors(request.url):
                response = self.transport.handle_request(request)
                try:
                    read = 0
                    for piece in response.iter_raw():
                        read += len(piece)
                        if read > max_answer_bytes:
                            break
                finally:
                    response.close()
            return response.status_code
        finally:
            _DEADLINE.reset(token)

    def _follow(self, url: str, headers: dict[str, str]) -> tuple[httpx.Response, tuple[str, ...]]:
        headers.setdefault("accept-encoding", "identity")
        chain: list[str] = []
        current = url
        while True:
            response = self._send(current, headers)
            location = response.headers.get("location")
            if response.status_code not in _REDIRECT_STATUSES or location is None:
                break
            response.close()
            chain.append(current)
            if len(chain) > self.max_redirects:
                raise PermanentMediaError(
                    "too_many_redirects", f"more than {self.max_redirects} redirects", details={"hops": len(chain)}
                )
            following = urllib.parse.urljoin(current, location)
            if _origin(following) is None or _origin(following) != _origin(current):
                headers = {k: v for k, v in headers.items() if k.lower() not in _SENSITIVE_HEADERS}
            current = following
        error = _status_error(response)
        if error is not None:
            response.close()
            raise error
        return response, tuple(chain)

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        target = self.policy.resolve(url)
        self._pins.pin(target)
        try:
            request = self._client.build_request("GET", url, headers=headers)
        except httpx.InvalidURL as bad:
            raise PermanentMediaError("invalid_url", f"the URL cannot be parsed: {bad}") from bad
        with _classified_transport_errors(request.url):
            # The transport directly: httpx.Client.send would parse Location itself, unchecked.
            response = self.transport.handle_request(request)
        response.request = request
        return response

    @staticmethod
    def _refuse_declared_oversize(response: httpx.Response, max_bytes: int) -> None:
        declared = response.headers.get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > max_bytes:
            raise PermanentMediaError(
                "too_large",
                f"Content-Length {declared} is larger than {max_bytes} bytes",
                details={"max_bytes": max_bytes, "content_length": int(declared)},
            )


def _origin(url: str) -> tuple[str, str | None, int | None] | None:
    """Scheme, host and port of a URL, or None when it cannot be parsed."""
    try:
        split = urllib.parse.urlsplit(url)
        scheme = split.scheme.lower()
        return scheme, split.hostname, split.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:
        return None
