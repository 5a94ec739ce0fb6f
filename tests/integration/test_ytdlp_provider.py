"""YtDlpMediaProvider running yt-dlp's generic extractor on a page served from 127.0.0.1.

The provider is built with `allow_generic=True`, the test-only setting that lets yt-dlp read any page
with an HTML5 <video>; production keeps it off so only the supported sites' extractors run.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from application.ports.errors import PermanentMediaError
from infrastructure.providers.ytdlp_provider import YtDlpMediaProvider, YtDlpOptions
from tests.support.fake_platform import FakePlatform, video_bytes


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield fake


@pytest.fixture
def provider() -> YtDlpMediaProvider:
    return YtDlpMediaProvider(YtDlpOptions(socket_timeout=5.0, allow_generic=True))


def test_html5_page_gives_title_video_and_subtitle_track(platform: FakePlatform, provider: YtDlpMediaProvider) -> None:
    media_id = platform.new_media_id()
    info = provider.fetch_metadata(platform.page_url(size=2048, media_id=media_id))
    assert info.title.startswith(f"Fake video {media_id}"), "the page's title (yt-dlp numbers embeds: ' (1)')"
    assert info.extra["provider"] == "ytdlp"
    assert info.video is not None
    assert info.video.url.startswith(f"{platform.url}/media/{media_id}.mp4?")
    assert info.video.mime_type == "video/mp4"
    assert [(track.lang, track.format, track.kind) for track in info.subtitles] == [("en", "vtt", "manual")]
    assert info.subtitles[0].url == f"{platform.url}/subs/generated/{media_id}/en.vtt"
    assert platform.count("/media/") == 0, "metadata only: no video bytes were downloaded"
    with httpx.Client(headers=info.video.headers) as client:
        assert client.get(info.video.url).content == video_bytes(media_id, 2048)
        assert client.get(info.subtitles[0].url).text.startswith("WEBVTT")


def test_page_without_track_has_no_subtitles(platform: FakePlatform, provider: YtDlpMediaProvider) -> None:
    info = provider.fetch_metadata(platform.page_url("no-subtitles"))
    assert info.video is not None
    assert info.subtitles == ()


def test_missing_page_is_media_not_found(platform: FakePlatform, provider: YtDlpMediaProvider) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        provider.fetch_metadata(platform.page_url("404"))
    assert raised.value.code == "media_not_found"


def test_without_the_generic_extractor_a_plain_page_is_unsupported(platform: FakePlatform) -> None:
    strict = YtDlpMediaProvider(YtDlpOptions(socket_timeout=5.0))
    before = platform.count("/watch/")
    with pytest.raises(PermanentMediaError) as raised:
        strict.fetch_metadata(platform.page_url())
    assert raised.value.code == "unsupported_url"
    assert platform.count("/watch/") == before, "nothing was fetched"
