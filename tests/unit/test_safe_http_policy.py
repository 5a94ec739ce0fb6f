"""The URL policy: forbidden spellings, schemes, resolved names, the allow list.

No test here touches the network: names go through a stand-in resolver, and literal addresses
are never handed to a resolver at all.
"""

from __future__ import annotations

import ipaddress
import socket

import pytest

from application.ports.errors import PermanentMediaError, TransientMediaError
from infrastructure.safe_http import ALLOW_CIDRS_ENV, UrlPolicy
from tests.support.loopback_http import StaticResolver

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


def _resolver() -> StaticResolver:
    return StaticResolver(
        {
            "localtest.me": ["127.0.0.1"],
            "loopback6.test": ["::1"],
            "metadata.test": ["169.254.169.254"],
            "nat64-metadata.test": ["64:ff9b::a9fe:a9fe"],
            "mapped-private.test": ["::ffff:10.1.2.3"],
            "half-private.test": [PUBLIC_V4, "10.0.0.1"],
            "public.test": [PUBLIC_V4, PUBLIC_V6],
        }
    )


FORBIDDEN_ADDRESSES = [
    "http://127.0.0.1",
    "http://127.0.0.1:8080/video.mp4",
    "http://2130706433",
    "http://0177.0.0.1",
    "http://0x7f.0.0.1",
    "http://0x7f000001",
    "http://0x7F000001/",
    "http://127.1",
    "http://127.0.0.1.",
    "http://[::1]",
    "http://[::ffff:127.0.0.1]",
    "http://[::ffff:7f00:1]",
    "http://[::7f00:1]",
    "http://0.0.0.0",
    "http://0",
    "http://localhost",
    "http://localhost.",
    "http://LOCALHOST",
    "http://media.localhost/x",
    "http://169.254.169.254/latest/meta-data",
    "http://[::ffff:169.254.169.254]/latest/meta-data",
    "http://[fd00::1]",
    "http://[fd00:ec2::254]",
    "http://10.0.0.1",
    "http://192.168.1.1",
    "http://172.16.0.1",
    "http://100.64.0.1",
    "http://224.0.0.1",
    "http://[ff02::1]",
    "http://[fe80::1]",
    "http://[64:ff9b::7f00:1]",
    "http://[2002:7f00:1::]",
    "http://240.0.0.1",
    "http://255.255.255.255",
    "http://192.0.2.1",
    "http://198.18.0.1",
    "https://user:pass@" + PUBLIC_V4,
    "https://" + PUBLIC_V4 + "@127.0.0.1/",
    "http://localtest.me",
    "http://localtest.me:8000/x",
    "http://loopback6.test",
    "http://metadata.test/latest/meta-data",
    "http://nat64-metadata.test",
    "http://mapped-private.test",
    "http://half-private.test",
]

INVALID_URLS = [
    "ftp://example.com/file",
    "file:///etc/passwd",
    "gopher://example.com:70/_",
    "dict://example.com:11211/",
    "javascript:alert(1)",
    "//example.com/no-scheme",
    "example.com/no-scheme",
    "http://",
    "http:///path-only",
    "http://example.com:99999/",
]


@pytest.mark.parametrize("url", FORBIDDEN_ADDRESSES)
def test_forbidden_spellings_are_refused(url: str) -> None:
    with pytest.raises(PermanentMediaError) as refused:
        UrlPolicy(resolver=_resolver()).check_url(url)
    assert refused.value.code == "url_not_allowed"
    assert refused.value.retryable is False


@pytest.mark.parametrize("url", INVALID_URLS)
def test_non_http_and_malformed_urls_are_invalid(url: str) -> None:
    with pytest.raises(PermanentMediaError) as refused:
        UrlPolicy(resolver=_resolver()).check_url(url)
    assert refused.value.code == "invalid_url"


def test_enough_forbidden_spellings_are_covered() -> None:
    assert len(FORBIDDEN_ADDRESSES) + len(INVALID_URLS) >= 25


@pytest.mark.parametrize(
    ("url", "decoded"),
    [
        ("http://2130706433", "127.0.0.1"),
        ("http://0177.0.0.1", "127.0.0.1"),
        ("http://0x7f.0.0.1", "127.0.0.1"),
        ("http://0x7f000001", "127.0.0.1"),
        ("http://127.1", "127.0.0.1"),
        ("http://0", "0.0.0.0"),
        ("http://134744072", "8.8.8.8"),
    ],
)
def test_inet_aton_spellings_are_refused_whatever_they_decode_to(url: str, decoded: str) -> None:
    resolver = _resolver()
    with pytest.raises(PermanentMediaError) as refused:
        UrlPolicy(allow_cidrs=["0.0.0.0/0"], resolver=resolver).check_url(url)
    assert refused.value.code == "url_not_allowed"
    assert refused.value.details["decodes_to"] == decoded
    assert resolver.calls == []


def test_literal_addresses_never_reach_the_resolver() -> None:
    resolver = _resolver()
    policy = UrlPolicy(resolver=resolver)
    assert policy.check_url(f"https://{PUBLIC_V4}/v.mp4") == [ipaddress.ip_address(PUBLIC_V4)]
    assert policy.check_url(f"https://[{PUBLIC_V6}]:8443/v") == [ipaddress.ip_address(PUBLIC_V6)]
    for url in ("http://127.0.0.1", "http://[::1]", "http://0x7f.0.0.1", "http://localhost"):
        with pytest.raises(PermanentMediaError):
            policy.check_url(url)
    assert resolver.calls == []


def test_a_public_name_returns_every_resolved_address() -> None:
    addresses = UrlPolicy(resolver=_resolver()).check_url("https://public.test/v.mp4?sig=abc")
    assert addresses == [ipaddress.ip_address(PUBLIC_V4), ipaddress.ip_address(PUBLIC_V6)]


def test_one_forbidden_address_among_public_ones_refuses_the_name() -> None:
    with pytest.raises(PermanentMediaError) as refused:
        UrlPolicy(resolver=_resolver()).check_url("https://half-private.test/")
    assert refused.value.code == "url_not_allowed"
    assert "10.0.0.1" in refused.value.message


def test_ipv4_mapped_public_address_is_permitted() -> None:
    mapped = "::ffff:" + PUBLIC_V4
    assert UrlPolicy().check_url(f"http://[{mapped}]/") == [ipaddress.ip_address(mapped)]


def test_allow_list_opens_exactly_the_listed_range() -> None:
    policy = UrlPolicy(allow_cidrs=["127.0.0.1/32"], resolver=_resolver())
    assert policy.check_url("http://127.0.0.1:8000/x") == [ipaddress.ip_address("127.0.0.1")]
    assert policy.check_url("http://localtest.me:8000/x") == [ipaddress.ip_address("127.0.0.1")]
    for still_forbidden in (
        "http://127.0.0.2",
        "http://[::1]",
        "http://[::ffff:127.0.0.1]",
        "http://169.254.169.254",
        "http://127.1",
        "http://localhost",
        "ftp://127.0.0.1/",
    ):
        with pytest.raises(PermanentMediaError):
            policy.check_url(still_forbidden)


def test_allow_list_comes_from_the_environment() -> None:
    environ = {ALLOW_CIDRS_ENV: "127.0.0.1/32, ::1/128"}
    policy = UrlPolicy.from_environment(environ, resolver=_resolver())
    assert policy.check_url("http://127.0.0.1/") == [ipaddress.ip_address("127.0.0.1")]
    assert policy.check_url("http://[::1]/") == [ipaddress.ip_address("::1")]
    with pytest.raises(PermanentMediaError):
        UrlPolicy.from_environment({}, resolver=_resolver()).check_url("http://127.0.0.1/")


def test_a_bad_allow_entry_fails_at_construction() -> None:
    with pytest.raises(ValueError, match="not a CIDR"):
        UrlPolicy(allow_cidrs=["127.0.0.1/33"])
    with pytest.raises(ValueError, match="translation|carries an IPv4"):
        UrlPolicy(allow_cidrs=["64:ff9b::/96"])


def test_a_name_that_does_not_exist_is_invalid() -> None:
    with pytest.raises(PermanentMediaError) as refused:
        UrlPolicy(resolver=_resolver()).check_url("https://no-such-host.test/")
    assert refused.value.code == "invalid_url"


def test_a_temporary_resolver_failure_is_transient() -> None:
    def failing(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "temporary failure in name resolution")

    with pytest.raises(TransientMediaError) as failed:
        UrlPolicy(resolver=failing).check_url("https://example.com/")
    assert failed.value.code == "dns_unavailable"


def test_allowed_schemes_can_be_narrowed() -> None:
    policy = UrlPolicy(allowed_schemes=("https",))
    assert policy.check_url(f"https://{PUBLIC_V4}/") == [ipaddress.ip_address(PUBLIC_V4)]
    with pytest.raises(PermanentMediaError) as refused:
        policy.check_url(f"http://{PUBLIC_V4}/")
    assert refused.value.code == "invalid_url"
