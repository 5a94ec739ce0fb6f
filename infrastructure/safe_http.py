"""Fetching URLs the service did not choose: the SSRF guard and bounded, streamed downloads.

Every hop is checked before any connection: http/https only, the name resolved and EVERY address
checked (loopback, private, link-local and cloud metadata, CGNAT, multicast, reserved, unspecified,
IPv4-mapped/NAT64/6to4/Teredo embeddings of those), then the connection is pinned to the checked
address (the Host header and TLS SNI/certificate check keep the name), so DNS cannot change between
check and connect. Redirects are followed by hand, each hop checked again, at most 5. Bodies are
streamed; the size limit is enforced while reading, and an overall deadline bounds each download.
`allow_cidrs` (MEDIATASKS_URL_ALLOW_CIDRS) is the only way to reach a blocked range (tests).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from application.ports.errors import PermanentMediaError, TransientMediaError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
REDIRECTS = (301, 302, 303, 307, 308)
CHECKED = "mediatasks_checked_address"
BLOCKED_NETWORKS = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4", "255.255.255.255/32",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64", "2001::/23",
    "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
))


def system_resolver(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        if e.errno in (socket.EAI_AGAIN,):
            raise TransientMediaError("dns_unavailable", f"Could not resolve {host} right now.") from e
        raise PermanentMediaError("media_not_found", f"The host {host} does not exist.") from e
    return list(dict.fromkeys(info[4][0] for info in infos))


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class UrlPolicy:
    allow_cidrs: Sequence[str] = ()
    resolver: Resolver = system_resolver

    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(c, strict=False) for c in self.allow_cidrs]

    def is_forbidden(self, ip: IPAddress) -> bool:
        if any(ip in net for net in self.allowed_networks()):
            return False
        inner = embedded_ipv4(ip)
        if inner is not None and self.is_forbidden(inner):
            return True
        if inner is not None and any(inner in net for net in self.allowed_networks()):
            return False
        return (not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_loopback or ip.is_link_local
                or ip.is_private or ip.is_unspecified or any(ip in net for net in BLOCKED_NETWORKS))

    def check_url(self, url: str) -> tuple[str, int, list[str]]:
        """(host, port, checked addresses) or PermanentMediaError invalid_url / url_not_allowed."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise PermanentMediaError("invalid_url", f"Not a valid URL: {e}") from e
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise PermanentMediaError("invalid_url", "Only absolute http and https URLs can be fetched.")
        if parts.username or parts.password:
            raise PermanentMediaError("url_not_allowed", "URLs with credentials are not fetched.")
        host = parts.hostname.rstrip(".").lower()
        port = port or (443 if scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
        if not addresses:
            raise PermanentMediaError("media_not_found", f"The host {host} has no address.")
        for ip in addresses:
            if self.is_forbidden(ip):
                raise PermanentMediaError("url_not_allowed", f"{host} resolves to a blocked address ({ip}).",
                                          details={"host": host})
        return host, port, [str(ip) for ip in addresses]


class PinnedTransport(httpx.HTTPTransport):
    """Connects to the address the policy checked, never to a fresh DNS answer."""

    def __init__(self, policy: UrlPolicy, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.policy = policy
        self.connections_attempted = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        extensions = dict(request.extensions)
        checked = extensions.pop(CHECKED, None)
        host, port, addresses = checked or self.policy.check_url(str(request.url))
        request.extensions = extensions
        address = addresses[0]
        pinned = request.url.copy_with(host=address)
        request.url = pinned
        request.headers["Host"] = host if port in (80, 443) else f"{host}:{port}"
        request.extensions = {**request.extensions, "sni_hostname": host}
        self.connections_attempted += 1
        return super().handle_request(request)


@dataclass
class FetchedResponse:
    status_code: int
    headers: httpx.Headers
    final_url: str
    _response: httpx.Response
    _max_bytes: int
    _deadline: float

    def iter_bytes(self) -> Iterator[bytes]:
        received = 0
        try:
            for chunk in self._response.iter_bytes():
                received += len(chunk)
                if received > self._max_bytes:
                    raise PermanentMediaError("too_large", f"The file is larger than {self._max_bytes} bytes.")
                if time.monotonic() > self._deadline:
                    raise TransientMediaError("timeout", "The download took longer than allowed.")
                yield chunk
        except httpx.TimeoutException as e:
            raise TransientMediaError("timeout", "The media server stopped sending data.") from e
        except httpx.TransportError as e:
            raise TransientMediaError("connection_failed", f"The download broke off: {type(e).__name__}.") from e


class SafeFetcher:
    """The `MediaFetcher` adapter: one httpx client with the pinned transport."""

    def __init__(self, policy: UrlPolicy, *, connect_timeout: float = 10, read_timeout: float = 30,
                 deadline_seconds: float = 3600, max_redirects: int = 5, user_agent: str = "mediatasks/1") -> None:
        self.policy = policy
        self.deadline_seconds = deadline_seconds
        self.max_redirects = max_redirects
        # No keep-alive: each hop is a fresh connection to the address just checked.
        self.transport = PinnedTransport(policy, retries=0, limits=httpx.Limits(max_keepalive_connections=0))
        self.client = httpx.Client(
            transport=self.transport, follow_redirects=False, headers={"User-Agent": user_agent},
            timeout=httpx.Timeout(connect=connect_timeout, read=read_timeout, write=read_timeout, pool=connect_timeout),
        )

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SafeFetcher:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @contextmanager
    def stream(self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None,
               deadline_seconds: float | None = None) -> Iterator[FetchedResponse]:
        deadline = time.monotonic() + (deadline_seconds or self.deadline_seconds)
        current = url
        for _ in range(self.max_redirects + 1):
            checked = self.policy.check_url(current)  # before httpx parses it: every spelling meets the policy
            try:
                request = self.client.build_request("GET", current, headers=dict(headers or {}))
            except httpx.InvalidURL as e:
                raise PermanentMediaError("invalid_url", f"Not a valid URL: {e}") from e
            request.extensions = {**request.extensions, CHECKED: checked}  # connect to what was checked
            try:
                response = self.client.send(request, stream=True)
            except httpx.TimeoutException as e:
                raise TransientMediaError("timeout", "The media server did not answer in time.") from e
            except httpx.RemoteProtocolError as e:
                if "location header" in str(e).lower():  # e.g. an octal or otherwise obfuscated address
                    raise PermanentMediaError("url_not_allowed", "Redirected to an address that is not allowed.") from e
                raise TransientMediaError("connection_failed", "The media server broke the protocol.") from e
            except httpx.TransportError as e:
                raise TransientMediaError("connection_failed", f"Could not connect: {type(e).__name__}.") from e
            try:
                if response.status_code in REDIRECTS and "location" in response.headers:
                    current = urljoin(current, response.headers["location"])
                    continue
                _raise_for_status(response)
                length = response.headers.get("content-length")
                if length and length.isdigit() and int(length) > max_bytes:
                    raise PermanentMediaError("too_large", f"The file is {length} bytes; the limit is {max_bytes}.")
                yield FetchedResponse(response.status_code, response.headers, current, response, max_bytes, deadline)
                return
            finally:
                response.close()
        raise PermanentMediaError("too_many_redirects", f"More than {self.max_redirects} redirects.")

    def get_bytes(self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None) -> bytes:
        with self.stream(url, max_bytes=max_bytes, headers=headers) as response:
            return b"".join(response.iter_bytes())


def _raise_for_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    if status in (404, 410):
        raise PermanentMediaError("media_not_found", f"The media server answered {status}.")
    if status in (401, 403):
        raise PermanentMediaError("media_private", f"The media server refused access ({status}).")
    if status == 429:
        raise TransientMediaError("rate_limited", "The media server asked us to slow down.",
                                  retry_after=_retry_after(response.headers.get("retry-after")))
    if status >= 500:
        raise TransientMediaError("upstream_unavailable", f"The media server answered {status}.",
                                  retry_after=_retry_after(response.headers.get("retry-after")))
    raise PermanentMediaError("media_not_found", f"The media server answered {status}.")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
