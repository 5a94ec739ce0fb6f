"""The SSRF guard: forbidden addresses in every spelling make zero connections; limits hold while streaming."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from application.ports.errors import PermanentMediaError, TransientMediaError
from infrastructure.safe_http import SafeFetcher, UrlPolicy, system_resolver
from tests.support.loopback_http import CountingServer, drip, redirect, respond


@pytest.fixture
def target() -> Iterator[CountingServer]:
    """The address an attacker wants to reach: 127.0.0.1, never allowed here."""
    server = CountingServer("127.0.0.1", {"/": respond(200, b"secret"), "/video.mp4": respond(200, b"secret")}).start()
    yield server
    server.stop()


@pytest.fixture
def origin(target: CountingServer) -> Iterator[CountingServer]:
    """An allowed server (127.0.0.2) that serves bytes and redirects."""
    server = CountingServer("127.0.0.2", {}).start()
    yield server
    server.stop()


def resolver_with(names: dict[str, list[str]]):
    def resolve(host: str, port: int) -> list[str]:
        return names[host] if host in names else system_resolver(host, port)

    return resolve


def spellings(port: int) -> list[str]:
    p = port
    return [
        f"http://127.0.0.1:{p}/",
        f"http://2130706433:{p}/",
        f"http://0177.0.0.1:{p}/",
        f"http://0x7f.0.0.1:{p}/",
        f"http://0x7f000001:{p}/",
        f"http://127.1:{p}/",
        f"http://127.000.000.001:{p}/",
        f"http://[::1]:{p}/",
        f"http://[::ffff:127.0.0.1]:{p}/",
        f"http://[::ffff:7f00:1]:{p}/",
        f"http://[0:0:0:0:0:ffff:7f00:1]:{p}/",
        f"http://0.0.0.0:{p}/",
        f"http://0:{p}/",
        f"http://localhost:{p}/",
        f"http://localhost.:{p}/",
        f"http://LOCALHOST:{p}/",
        f"http://[64:ff9b::7f00:1]:{p}/",
        f"http://[2002:7f00:1::]:{p}/",
        f"http://rebind.example:{p}/",
        f"http://mixed.example:{p}/",
        f"http://user:pw@127.0.0.2:{p}/",
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00::1]/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://172.16.0.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://255.255.255.255/",
        "http://198.18.0.1/",
        f"ftp://127.0.0.1:{p}/",
        "file:///etc/passwd",
        f"gopher://127.0.0.1:{p}/_GET",
        "javascript:alert(1)",
        "//127.0.0.1/",
    ]


def test_every_forbidden_spelling_is_refused_with_zero_connections(target: CountingServer) -> None:
    port = target.server_address[1]
    policy = UrlPolicy(
        allow_cidrs=("127.0.0.2/32",),
        resolver=resolver_with(
            {
                "rebind.example": ["127.0.0.1"],
                "mixed.example": ["127.0.0.2", "127.0.0.1"],
            }
        ),
    )
    urls = spellings(port)
    assert len(urls) >= 30
    with SafeFetcher(policy, connect_timeout=1, read_timeout=1) as fetcher:
        for url in urls:
            with pytest.raises(PermanentMediaError) as info:
                fetcher.get_bytes(url, max_bytes=1000)
            assert info.value.code in ("url_not_allowed", "invalid_url"), (url, info.value.code)
        assert fetcher.transport.connections_attempted == 0
    assert target.connections == 0


def test_redirects_to_forbidden_addresses_are_refused(target: CountingServer, origin: CountingServer) -> None:
    port = target.server_address[1]
    hops = {f"/r{i}": redirect(url) for i, url in enumerate(spellings(port)[:20])}
    origin.routes.update(hops)
    policy = UrlPolicy(
        allow_cidrs=("127.0.0.2/32",),
        resolver=resolver_with({"rebind.example": ["127.0.0.1"], "mixed.example": ["127.0.0.2", "127.0.0.1"]}),
    )
    with SafeFetcher(policy, connect_timeout=1, read_timeout=1) as fetcher:
        for path in hops:
            with pytest.raises(PermanentMediaError) as info:
                fetcher.get_bytes(origin.url + path, max_bytes=1000)
            assert info.value.code in ("url_not_allowed", "invalid_url")
    assert target.connections == 0
    assert origin.connections >= len(hops)


def test_connection_is_pinned_to_the_checked_address(target: CountingServer, origin: CountingServer) -> None:
    """DNS rebinding: the name is checked once per hop and the connection goes to that address."""
    origin.routes["/video.mp4"] = respond(200, b"allowed bytes", {"Content-Type": "video/mp4"})
    answers = iter([["127.0.0.2"], ["127.0.0.1"]])
    policy = UrlPolicy(allow_cidrs=("127.0.0.2/32",), resolver=lambda host, port: next(answers))
    url = f"http://media.example:{origin.server_address[1]}/video.mp4"
    with SafeFetcher(policy) as fetcher:
        assert fetcher.get_bytes(url, max_bytes=1000) == b"allowed bytes"
    assert (target.connections, origin.connections) == (0, 1)


def test_redirect_chains_are_followed_up_to_five(origin: CountingServer) -> None:
    base = origin.url
    origin.routes.update({f"/h{i}": redirect(f"{base}/h{i + 1}") for i in range(7)})
    origin.routes["/h5"] = respond(200, b"after five")
    origin.routes["/h7"] = respond(200, b"after seven")
    with SafeFetcher(UrlPolicy(allow_cidrs=("127.0.0.2/32",))) as fetcher:
        assert fetcher.get_bytes(base + "/h0", max_bytes=100) == b"after five"  # 5 redirects
        origin.routes["/h5"] = redirect(f"{base}/h6")
        with pytest.raises(PermanentMediaError) as info:
            fetcher.get_bytes(base + "/h0", max_bytes=100)  # 7 redirects
    assert info.value.code == "too_many_redirects"


def test_size_limit_is_enforced_while_streaming(origin: CountingServer) -> None:
    origin.routes["/chunked"] = drip(total=5_000_000, piece=65536, delay=0)
    origin.routes["/lying"] = drip(total=5_000_000, piece=65536, delay=0, content_length=1000)
    origin.routes["/declared"] = respond(200, b"", {"Content-Length": str(10**10)})
    with SafeFetcher(UrlPolicy(allow_cidrs=("127.0.0.2/32",))) as fetcher:
        for path in ("/chunked", "/declared"):
            received = 0
            with pytest.raises(PermanentMediaError) as info:
                with fetcher.stream(origin.url + path, max_bytes=1_000_000) as response:
                    for chunk in response.iter_bytes():
                        received += len(chunk)
            assert info.value.code == "too_large"
            assert received <= 1_000_000
        assert len(fetcher.get_bytes(origin.url + "/lying", max_bytes=1_000_000)) == 1000


def test_overall_deadline_stops_a_slow_drip(origin: CountingServer) -> None:
    origin.routes["/slow"] = drip(total=10_000, piece=10, delay=0.05)
    with SafeFetcher(UrlPolicy(allow_cidrs=("127.0.0.2/32",)), read_timeout=5, deadline_seconds=1) as fetcher:
        with pytest.raises(TransientMediaError) as info:
            fetcher.get_bytes(origin.url + "/slow", max_bytes=1_000_000)
    assert info.value.code == "timeout"


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (404, PermanentMediaError, "media_not_found"),
        (410, PermanentMediaError, "media_not_found"),
        (401, PermanentMediaError, "media_private"),
        (403, PermanentMediaError, "media_private"),
        (429, TransientMediaError, "rate_limited"),
        (503, TransientMediaError, "upstream_unavailable"),
    ],
)
def test_statuses_are_classified(origin: CountingServer, status: int, error: type, code: str) -> None:
    origin.routes["/s"] = respond(status, b"", {"Retry-After": "7"})
    with SafeFetcher(UrlPolicy(allow_cidrs=("127.0.0.2/32",))) as fetcher:
        with pytest.raises(error) as info:
            fetcher.get_bytes(origin.url + "/s", max_bytes=100)
    assert info.value.code == code
    if status in (429, 503):
        assert info.value.retry_after == 7
