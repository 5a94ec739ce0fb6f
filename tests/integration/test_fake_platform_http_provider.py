"""HttpMediaProvider against the fake platform's provider API, over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import httpx
import pytest

from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaInfo
from infrastructure.providers.http_provider import HttpMediaProvider
from infrastructure.retry_after import retry_after_seconds as parse_retry_after
from tests.support.fake_platform import FakePlatform


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform(api_key="test-key", api_host="fake.example") as fake:
        yield fake


@pytest.fixture
def provider(platform: FakePlatform) -> Iterator[HttpMediaProvider]:
    with HttpMediaProvider(platform.provider_url, "test-key", "fake.example", timeout=1.0) as http_provider:
        yield http_provider


def test_ok_media_with_video_and_subtitles(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    url = platform.media_url("ok", size=4096)
    before = platform.count("/v1/media")
    info = provider.fetch_metadata(url)
    assert platform.count("/v1/media") == before + 1
    media_id = url.split("/video/")[1].split("?")[0]
    assert info.platform == "tiktok"
    assert info.media_id == media_id
    assert info.title == f"Fake video {media_id} (ok)"
    assert info.duration == 4.25
    assert info.video is not None
    assert info.video.size == 4096 and info.video.mime_type == "video/mp4"
    assert info.video.url.startswith(f"{platform.url}/media/{media_id}.mp4?")
    assert [(track.lang, track.format, track.kind) for track in info.subtitles] == [("en", "vtt", "manual")]
    assert info.extra["provider"] == "http"
    assert MediaInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    request = platform.api_requests()[-1]
    assert request.query == {"url": url}, "the media URL arrives whole, url-encoded on the wire"
    assert request.headers["X-RapidAPI-Key"] == "test-key"
    assert request.headers["X-RapidAPI-Host"] == "fake.example"
    # The URLs it returns really serve what they promise.
    with httpx.Client() as client:
        video = client.get(info.video.url)
        subtitles = client.get(info.subtitles[0].url)
    assert video.status_code == 200 and len(video.content) == 4096
    assert subtitles.text.startswith("WEBVTT") and media_id in subtitles.text


def test_several_languages_and_asr(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    info = provider.fetch_metadata(platform.media_url("ok", langs="en,de,ja", kind="asr"))
    assert [track.lang for track in info.subtitles] == ["en", "de", "ja"]
    assert {track.kind for track in info.subtitles} == {"asr"}


def test_fixture_subtitle_track(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    info = provider.fetch_metadata(platform.media_url("ok", subtitle="yt_json3_manual.y2bcaptions.json3"))
    assert [(track.lang, track.format) for track in info.subtitles] == [("en", "json3")]
    body = httpx.get(info.subtitles[0].url).json()
    assert body["wireMagic"] == "pb3"


@pytest.mark.parametrize(
    ("mode", "code"),
    [("404", "media_not_found"), ("401", "provider_auth"), ("private", "media_private")],
)
def test_permanent_failures(platform: FakePlatform, provider: HttpMediaProvider, mode: str, code: str) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        provider.fetch_metadata(platform.media_url(mode))
    assert raised.value.code == code
    assert raised.value.retryable is False


def test_wrong_key_is_provider_auth(platform: FakePlatform) -> None:
    with HttpMediaProvider(platform.provider_url, "wrong-key", "fake.example") as wrong:
        with pytest.raises(PermanentMediaError) as raised:
            wrong.fetch_metadata(platform.media_url("ok"))
    assert raised.value.code == "provider_auth"
    assert raised.value.details["status"] == 401


def test_429_carries_retry_after_then_succeeds(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    url = platform.media_url("429", retry_after=7, fails=1)
    with pytest.raises(TransientMediaError) as raised:
        provider.fetch_metadata(url)
    assert raised.value.code == "rate_limited"
    assert raised.value.retry_after == 7.0
    assert raised.value.retryable is True
    assert provider.fetch_metadata(url).video is not None


def test_503_twice_then_ok(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    url = platform.media_url("flaky-503", fails=2)
    for _ in range(2):
        with pytest.raises(TransientMediaError) as raised:
            provider.fetch_metadata(url)
        assert raised.value.code == "provider_unavailable"
        assert raised.value.details["status"] == 503
        assert raised.value.retry_after is None
    info = provider.fetch_metadata(url)
    assert info.video is not None
    assert platform.attempts[f"api:{url}"] == 3


def test_subtitles_only_media_has_no_video(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    info = provider.fetch_metadata(platform.media_url("subtitles-only"))
    assert info.video is None
    assert len(info.subtitles) == 1


def test_no_subtitles_media(platform: FakePlatform, provider: HttpMediaProvider) -> None:
    info = provider.fetch_metadata(platform.media_url("no-subtitles"))
    assert info.video is not None
    assert info.subtitles == ()


@pytest.mark.parametrize("mode", ["malformed", "malformed-schema", "api-oversize", "deep-200"])
def test_bad_answers_are_permanent_bad_response(platform: FakePlatform, provider: HttpMediaProvider, mode: str) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        provider.fetch_metadata(platform.media_url(mode))
    assert raised.value.code == "provider_bad_response"


def test_slow_api_times_out(platform: FakePlatform) -> None:
    with HttpMediaProvider(platform.provider_url, "test-key", "fake.example", timeout=0.2) as impatient:
        with pytest.raises(TransientMediaError) as raised:
            impatient.fetch_metadata(platform.media_url("slow-api", delay=1))
    assert raised.value.code == "timeout"


def test_nobody_listening_is_provider_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    with HttpMediaProvider(f"http://127.0.0.1:{closed_port}", "k", "h", timeout=1.0) as nowhere:
        with pytest.raises(TransientMediaError) as raised:
            nowhere.fetch_metadata("https://www.tiktok.com/@fake/video/1")
    assert raised.value.code == "provider_unavailable"


def test_default_mode_set_over_http_applies_to_urls_without_a_mode(
    platform: FakePlatform, provider: HttpMediaProvider
) -> None:
    bare = "https://www.tiktok.com/@fake/video/" + platform.new_media_id()
    try:
        assert httpx.post(f"{platform.url}/control/default-mode", json={"mode": "404"}).status_code == 200
        with pytest.raises(PermanentMediaError):
            provider.fetch_metadata(bare)
    finally:
        platform.set_default_mode("ok")
    assert provider.fetch_metadata(bare).media_id == bare.rsplit("/", 1)[1]


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("120", 120.0), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0), ("soon", None), (None, None)],
)
def test_retry_after_parsing(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header) == seconds
