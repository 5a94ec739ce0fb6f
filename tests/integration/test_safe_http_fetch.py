"""The fetcher against real loopback servers that count the TCP connections they accept.

Only loopback addresses are ever targets here: spellings that would leave the machine if the
guard failed (metadata, private ranges, NAT64, 6to4) are covered by the policy unit tests,
which never connect.
"""

from __future__ import annotations

import socket
import ssl
import time
import urllib.parse
from collections.abc import Iterator

import pytest
import trustme

from application.ports.errors import MediaError, PermanentMediaError, TransientMediaError
from infrastructure.safe_http import SOCKET_READ_BYTES, SafeFetcher, UrlPolicy
from tests.support.loopback_http import LoopbackServer, RebindingResolver, StaticResolver

LOOPBACK_ONLY = ["127.0.0.1/32"]


def _fetcher(
    allow: list[str] | None = None,
    *,
    resolver: object = None,
    read_timeout: float = 5.0,
    deadline: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
) -> SafeFetcher:
    policy = UrlPolicy(allow_cidrs=allow or [], resolver=resolver)  # type: ignore[arg-type]
    return SafeFetcher(
        policy,
        connect_timeout=2.0,
        read_timeout=read_timeout,
        deadline_seconds=deadline,
        ssl_context=ssl_context,
    )


def _names() -> StaticResolver:
    return StaticResolver({"localtest.me": ["127.0.0.1"], "media.test": ["127.0.0.1"]})


@pytest.fixture
def server() -> Iterator[LoopbackServer]:
    with LoopbackServer() as running:
        yield running


@pytest.fixture
def server6() -> Iterator[LoopbackServer]:
    with LoopbackServer("::1") as running:
        yield running


def _redirect_to(origin: LoopbackServer, target: str) -> str:
    return origin.url("/to?url=" + urllib.parse.quote(target, safe=""))


def test_forbidden_spellings_make_zero_connections(server: LoopbackServer, server6: LoopbackServer) -> None:
    port, port6 = server.port, server6.port
    spellings = [
        f"http://127.0.0.1:{port}/ok",
        f"http://2130706433:{port}/ok",
        f"http://0177.0.0.1:{port}/ok",
        f"http://0x7f.0.0.1:{port}/ok",
        f"http://0x7f000001:{port}/ok",
        f"http://127.1:{port}/ok",
        f"http://[::ffff:127.0.0.1]:{port}/ok",
        f"http://[::ffff:7f00:1]:{port}/ok",
        f"http://0.0.0.0:{port}/ok",
        f"http://0:{port}/ok",
        f"http://localhost:{port}/ok",
        f"http://localhost.:{port}/ok",
        f"http://LOCALHOST:{port}/ok",
        f"http://localtest.me:{port}/ok",
        f"http://user@127.0.0.1:{port}/ok",
        f"ftp://127.0.0.1:{port}/ok",
        f"gopher://127.0.0.1:{port}/_GET%20/ok",
        f"http://[::1]:{port6}/ok",
        f"http://localtest.me:{port6}/ok",
    ]
    with _fetcher(resolver=_names()) as fetcher:
        for url in spellings:
            with pytest.raises(PermanentMediaError) as refused:
                fetcher.get_bytes(url, 1000)
            assert refused.value.code in ("url_not_allowed", "invalid_url"), url
    assert server.connections == 0
    assert server6.connections == 0

    with _fetcher(LOOPBACK_ONLY, resolver=_names()) as fetcher:
        assert fetcher.get_bytes(f"http://localtest.me:{port}/ok", 1000) == b"hello"
    assert server.connections == 1


def test_allowed_fetch_streams_status_headers_and_body(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with fetcher.stream(server.url("/bytes/300000"), max_bytes=10**6, chunk_size=16384) as got:
            assert got.status_code == 200
            assert got.headers["content-length"] == "300000"
            assert got.final_url == server.url("/bytes/300000")
            chunks = list(got.iter_bytes())
    assert all(0 < len(c) <= 16384 for c in chunks)
    assert b"".join(chunks) == b"y" * 300000
    assert server.connections == 1


def test_a_plain_length_body_is_read_whole_from_the_socket_and_the_connection_not_reused(
    server: LoopbackServer,
) -> None:
    size = 3 * SOCKET_READ_BYTES + 12345
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with fetcher.stream(server.url(f"/bytes/{size}"), max_bytes=size) as got:
            chunks = list(got.iter_bytes())
            assert got.bytes_read == size
        assert fetcher.get_bytes(server.url("/ok"), 100) == b"hello"
    assert b"".join(chunks) == b"y" * size
    assert all(0 < len(chunk) <= SOCKET_READ_BYTES for chunk in chunks)
    assert server.connections == 2  # h11 never saw that body end: its connection was closed, not pooled


def test_host_header_names_the_url_host_not_the_pinned_address(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY, resolver=_names()) as fetcher:
        assert fetcher.get_bytes(f"http://media.test:{server.port}/ok", 100) == b"hello"
    ((_path, headers),) = server.requests
    assert headers["Host"] == f"media.test:{server.port}"


def test_a_redirect_chain_of_three_is_followed(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with fetcher.stream(server.url("/redirect/2"), max_bytes=100) as got:
            assert b"".join(got.iter_bytes()) == b"hello"
            assert got.final_url == server.url("/ok")
            assert len(got.redirects) == 3
    assert server.paths == ["/redirect/2", "/redirect/1", "/redirect/0", "/ok"]


def test_five_redirects_pass_and_six_are_refused(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        assert fetcher.get_bytes(server.url("/redirect/4"), 100) == b"hello"
        with pytest.raises(PermanentMediaError) as refused:
            fetcher.get_bytes(server.url("/redirect/5"), 100)
    assert refused.value.code == "too_many_redirects"
    assert server.paths.count("/ok") == 1
    assert server.paths[-1] == "/redirect/0"


def test_redirect_to_a_blocked_address_is_refused_before_connecting(
    server: LoopbackServer, server6: LoopbackServer
) -> None:
    with LoopbackServer("127.0.0.2") as other:
        with _fetcher(LOOPBACK_ONLY) as fetcher:
            for target in (server6.url("/ok"), other.url("/ok"), f"http://0x7f000002:{other.port}/ok"):
                with pytest.raises(PermanentMediaError) as refused:
                    fetcher.get_bytes(_redirect_to(server, target), 100)
                assert refused.value.code == "url_not_allowed"
        assert server6.connections == 0
        assert other.connections == 0

        with _fetcher(LOOPBACK_ONLY + ["127.0.0.2/32"]) as fetcher:
            assert fetcher.get_bytes(_redirect_to(server, other.url("/ok")), 100) == b"hello"
        assert other.connections == 1


def test_credentials_are_dropped_when_a_redirect_changes_origin(server: LoopbackServer) -> None:
    with LoopbackServer("127.0.0.2") as other:
        with _fetcher(LOOPBACK_ONLY + ["127.0.0.2/32"]) as fetcher:
            fetcher.get_bytes(
                _redirect_to(server, other.url("/ok")),
                100,
                headers={"Authorization": "Bearer secret", "X-Trace": "t1"},
            )
        ((_first, sent_to_origin),) = server.requests
        ((_second, sent_elsewhere),) = other.requests
    assert sent_to_origin["Authorization"] == "Bearer secret"
    assert "Authorization" not in sent_elsewhere
    assert sent_elsewhere["X-Trace"] == "t1"


def test_dns_rebinding_cannot_move_the_connection(server: LoopbackServer) -> None:
    with LoopbackServer("127.0.0.2", server.port) as rebound:
        resolver = RebindingResolver(["127.0.0.1", "127.0.0.2"])
        with _fetcher(LOOPBACK_ONLY, resolver=resolver) as fetcher:
            assert fetcher.get_bytes(f"http://rebind.test:{server.port}/ok", 100) == b"hello"
        assert resolver.calls == ["rebind.test"]
        assert (server.connections, rebound.connections) == (1, 0)

        resolver = RebindingResolver(["127.0.0.1", "127.0.0.2"])
        with _fetcher(LOOPBACK_ONLY + ["127.0.0.2/32"], resolver=resolver) as fetcher:
            fetcher.get_bytes(f"http://rebind.test:{server.port}/ok", 100)
        assert resolver.calls == ["rebind.test"]
        assert (server.connections, rebound.connections) == (2, 0)


def test_body_without_length_stops_at_the_cap(server: LoopbackServer) -> None:
    max_bytes, chunk_size = 100_000, 16_384
    delivered = 0
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with pytest.raises(PermanentMediaError) as refused:
            with fetcher.stream(server.url("/endless"), max_bytes=max_bytes, chunk_size=chunk_size) as got:
                for chunk in got.iter_bytes():
                    delivered += len(chunk)
    assert refused.value.code == "too_large"
    assert delivered <= max_bytes
    assert max_bytes < got.bytes_read <= max_bytes + SOCKET_READ_BYTES  # at most one socket read past the cap
    time.sleep(0.2)
    assert server.endless_bytes_sent < 64 * 1024 * 1024


def test_declared_oversize_is_refused_before_the_body(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with pytest.raises(PermanentMediaError) as refused:
            with fetcher.stream(server.url("/bytes/5000"), max_bytes=4999):
                pytest.fail("an oversize response must not be handed out")
        assert refused.value.code == "too_large"
        with pytest.raises(PermanentMediaError) as refused:
            fetcher.get_bytes(server.url("/huge-length"), 10**6)
    assert refused.value.details["content_length"] == 10 * 1024**3


def test_lying_content_length(server: LoopbackServer) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with fetcher.stream(server.url("/short-length"), max_bytes=100) as got:
            assert b"".join(got.iter_bytes()) == b"z" * 10
            assert got.bytes_read == 10
        with pytest.raises(TransientMediaError) as cut:
            fetcher.get_bytes(server.url("/long-length"), 10_000)
    assert cut.value.code == "connection_failed"


def test_slow_drip_trips_the_overall_deadline(server: LoopbackServer) -> None:
    received = 0
    started = time.monotonic()
    with _fetcher(LOOPBACK_ONLY, read_timeout=5.0, deadline=1.0) as fetcher:
        with pytest.raises(TransientMediaError) as timed_out:
            with fetcher.stream(server.url("/drip"), max_bytes=1000, chunk_size=1) as got:
                for chunk in got.iter_bytes():
                    received += len(chunk)
    elapsed = time.monotonic() - started
    assert timed_out.value.code == "timeout"
    assert 0 < received < 200
    assert 0.9 < elapsed < 2.0


@pytest.mark.parametrize(
    ("read_timeout", "deadline"),
    [(5.0, 0.5), (0.3, 10.0)],
    ids=["deadline-caps-a-single-blocking-read", "read-timeout"],
)
def test_a_stalled_read_times_out(server: LoopbackServer, read_timeout: float, deadline: float) -> None:
    started = time.monotonic()
    with _fetcher(LOOPBACK_ONLY, read_timeout=read_timeout, deadline=deadline) as fetcher:
        with pytest.raises(TransientMediaError) as timed_out:
            fetcher.get_bytes(server.url("/stall"), 100)
    assert timed_out.value.code == "timeout"
    assert time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (404, PermanentMediaError, "media_not_found"),
        (410, PermanentMediaError, "media_not_found"),
        (401, PermanentMediaError, "media_private"),
        (403, PermanentMediaError, "media_private"),
        (429, TransientMediaError, "rate_limited"),
        (500, TransientMediaError, "upstream_unavailable"),
        (503, TransientMediaError, "upstream_unavailable"),
    ],
)
def test_statuses_map_to_classified_errors(
    server: LoopbackServer, status: int, kind: type[MediaError], code: str
) -> None:
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with pytest.raises(MediaError) as failed:
            fetcher.get_bytes(server.url(f"/status/{status}"), 100)
    assert type(failed.value) is kind
    assert failed.value.code == code
    assert failed.value.details["status"] == status
    if status in (429, 503):
        assert failed.value.retry_after == 7.0  # type: ignore[attr-defined]


def test_a_refused_connection_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with _fetcher(LOOPBACK_ONLY) as fetcher:
        with pytest.raises(TransientMediaError) as failed:
            fetcher.get_bytes(f"http://127.0.0.1:{closed_port}/ok", 100)
    assert failed.value.code == "connection_failed"


def test_tls_verifies_the_hostname_over_the_pinned_address() -> None:
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("media.test").configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    authority.configure_trust(client_tls)
    with LoopbackServer(tls=server_tls) as tls_server:
        with _fetcher(LOOPBACK_ONLY, resolver=_names(), ssl_context=client_tls) as fetcher:
            assert fetcher.get_bytes(f"https://media.test:{tls_server.port}/ok", 100) == b"hello"
            with pytest.raises(TransientMediaError):
                fetcher.get_bytes(tls_server.url("/ok"), 100)
        assert tls_server.sni_names[0] == "media.test"
        assert tls_server.paths == ["/ok"]
