"""The fake platform's own CDN behaviours, checked over real HTTP (later end-to-end tests rely on them)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import httpx
import pytest

from domain.platforms import validate_submission_url
from infrastructure.providers.http_provider import HttpMediaProvider
from tests.support.fake_platform import (
    BLOCKED_TARGETS,
    HUGE_SIZE,
    MODES,
    FakePlatform,
    video_bytes,
    video_sha256,
)
from tests.support.shared_fixtures import fixtures_dir


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield fake


@pytest.fixture(scope="module")
def provider(platform: FakePlatform) -> Iterator[HttpMediaProvider]:
    with HttpMediaProvider(platform.provider_url, platform.api_key, platform.api_host, timeout=2.0) as http_provider:
        yield http_provider


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http_client:
        yield http_client


def video_url_for(provider: HttpMediaProvider, media_url: str) -> str:
    info = provider.fetch_metadata(media_url)
    assert info.video is not None
    return info.video.url


@pytest.mark.parametrize("platform_name", ["tiktok", "x", "instagram", "vimeo", "dailymotion"])
def test_media_urls_are_supported_and_keep_their_mode(platform: FakePlatform, platform_name: str) -> None:
    url = platform.media_url("slow", size=10, platform=platform_name, delay=0.1)
    found, normalized = validate_submission_url(url)
    assert found.name == platform_name
    assert "mode=slow" in normalized and "size=10" in normalized and "delay=0.1" in normalized


def test_unknown_mode_is_refused(platform: FakePlatform) -> None:
    with pytest.raises(ValueError):
        platform.media_url("nonsense")
    assert "ok" in MODES


def test_video_is_deterministic_and_sized(
    platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client
) -> None:
    size = 200_000
    url = video_url_for(provider, platform.media_url("ok", size=size, media_id="42"))
    response = client.get(url)
    assert response.headers["Content-Type"] == "video/mp4"
    assert int(response.headers["Content-Length"]) == size
    assert response.content == video_bytes("42", size)
    assert hashlib.sha256(response.content).hexdigest() == video_sha256("42", size)
    assert response.content[4:8] == b"ftyp"
    assert video_bytes("43", size) != response.content, "each media id has its own bytes"
    assert client.head(url).headers["Content-Length"] == str(size)


def test_slow_video_drips(platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client) -> None:
    url = video_url_for(provider, platform.media_url("slow", size=8 * 1024, chunk=1024, delay=0.05))
    arrivals = []
    started = time.monotonic()
    with client.stream("GET", url) as response:
        for chunk in response.iter_raw():
            arrivals.append((time.monotonic() - started, len(chunk)))
    assert sum(length for _, length in arrivals) == 8 * 1024
    assert arrivals[-1][0] >= 0.3, "eight chunks 50 ms apart"
    assert len(arrivals) >= 4, "bytes arrive in several pieces"


def test_video_flaky_503(platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client) -> None:
    url = video_url_for(provider, platform.media_url("video-flaky-503", size=100, fails=1))
    assert client.get(url).status_code == 503
    assert client.get(url).status_code == 200


def test_wrong_content_type(platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client) -> None:
    response = client.get(video_url_for(provider, platform.media_url("wrong-type")))
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")


def test_redirect_chain(platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client) -> None:
    url = video_url_for(provider, platform.media_url("redirect", size=1000, hops=4, media_id="77"))
    response = client.get(url, follow_redirects=True)
    assert len(response.history) == 4
    assert all(hop.status_code == 302 for hop in response.history)
    assert response.content == video_bytes("77", 1000)


@pytest.mark.parametrize("target", sorted(BLOCKED_TARGETS))
def test_redirect_to_blocked_address(
    platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client, target: str
) -> None:
    response = client.get(video_url_for(provider, platform.media_url("redirect-blocked", to=target)))
    assert response.status_code == 302
    assert response.headers["Location"] == BLOCKED_TARGETS[target]


def test_oversize_declares_a_huge_length(
    platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client
) -> None:
    url = video_url_for(provider, platform.media_url("oversize", size=1000))
    with client.stream("GET", url) as response:
        assert int(response.headers["Content-Length"]) == HUGE_SIZE
        received = 0
        for chunk in response.iter_raw():
            received += len(chunk)
            if received > 1_000_000:
                break
    assert received > 1_000_000, "the body goes on well past what the API declared"


def test_endless_body_has_no_length(platform: FakePlatform, provider: HttpMediaProvider, client: httpx.Client) -> None:
    url = video_url_for(provider, platform.media_url("endless", size=1000))
    with client.stream("GET", url) as response:
        assert "Content-Length" not in response.headers
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 2_000_000:
                break
    assert received > 2_000_000


def test_fixture_subtitles_are_served_byte_for_byte(platform: FakePlatform, client: httpx.Client) -> None:
    name = "chinese_gb2312.srt-tools.srt"
    response = client.get(f"{platform.url}/subs/fixture/{name}")
    assert response.status_code == 200
    assert response.content == (fixtures_dir() / "subtitles" / name).read_bytes()
    assert client.get(f"{platform.url}/subs/fixture/..%2FREADME.md").status_code == 404
    assert client.get(f"{platform.url}/subs/fixture/nope.vtt").status_code == 404


def test_counters_and_reset() -> None:
    with FakePlatform() as fake, httpx.Client() as http_client:
        http_client.get(f"{fake.url}/subs/generated/1/en.vtt")
        http_client.get(f"{fake.url}/subs/generated/1/de.vtt")
        assert fake.count("/subs/generated/1/") == 2
        assert http_client.get(f"{fake.url}/control/hits").json() == {
            "/subs/generated/1/en.vtt": 1,
            "/subs/generated/1/de.vtt": 1,
            "/control/hits": 1,
        }
        assert http_client.post(f"{fake.url}/control/reset").status_code == 200
        assert fake.count("/subs/") == 0


def test_stop_ends_a_slow_download_and_frees_the_port(client: httpx.Client) -> None:
    fake = FakePlatform().start()
    url = f"{fake.url}/media/5.mp4?mode=slow&size=100000&chunk=100&delay=0.2"
    with client.stream("GET", url) as response:
        started = time.monotonic()
        fake.stop()
        with pytest.raises(httpx.HTTPError):
            for _ in response.iter_raw():
                pass
    assert time.monotonic() - started < 3
    with pytest.raises(httpx.ConnectError):
        client.get(url)
