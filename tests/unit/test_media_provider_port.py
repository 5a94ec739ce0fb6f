"""The MediaProvider port's value objects: JSON round trips and validation."""

from __future__ import annotations

import json

import pytest

from application.ports.media_provider import MediaInfo, MediaProvider, SubtitleSource, VideoSource
from infrastructure.providers import media_provider_from_settings
from infrastructure.providers.http_provider import HttpMediaProvider
from infrastructure.providers.ytdlp_provider import YtDlpMediaProvider

FULL = MediaInfo(
    platform="tiktok",
    media_id="7301",
    title="A clip",
    duration=12.5,
    uploader="someone",
    thumbnail_url="https://cdn.example/t.jpg",
    video=VideoSource("https://cdn.example/v.mp4", 1048576, "video/mp4", {"Referer": "https://www.tiktok.com/"}),
    subtitles=(
        SubtitleSource("en", "vtt", "https://cdn.example/en.vtt"),
        SubtitleSource("en-US", "json3", "https://cdn.example/en.json3", kind="asr", name="English (auto)"),
        SubtitleSource("de", "srt", "https://cdn.example/de.srt"),
    ),
    extra={"provider": "http", "nested": {"a": [1, 2]}},
)


def test_round_trip_through_json() -> None:
    as_json = json.dumps(FULL.to_dict())
    assert MediaInfo.from_dict(json.loads(as_json)) == FULL


def test_subtitle_only_media_round_trips() -> None:
    info = MediaInfo(platform="youtube", media_id="x", title="t", subtitles=FULL.subtitles[:1])
    data = json.loads(json.dumps(info.to_dict()))
    assert data["video"] is None
    assert MediaInfo.from_dict(data) == info


def test_minimal_dict_gets_defaults() -> None:
    info = MediaInfo.from_dict({"platform": "x", "media_id": 20})
    assert info.media_id == "20" and info.title == "" and info.video is None and info.subtitles == ()
    track = SubtitleSource.from_dict({"lang": "en", "format": "vtt", "url": "https://s/en.vtt"})
    assert track.kind == "manual" and track.name is None


def test_subtitles_for_prefers_manual_and_matches_primary_subtag() -> None:
    assert [track.lang for track in FULL.subtitles_for("en")] == ["en", "en-US"]
    assert [track.lang for track in FULL.subtitles_for("EN-us")] == ["en-US"]
    assert FULL.subtitles_for("fr") == ()


@pytest.mark.parametrize(("fmt", "kind"), [("ass", "manual"), ("vtt", "auto"), ("", "manual")])
def test_unknown_format_or_kind_is_refused(fmt: str, kind: str) -> None:
    with pytest.raises(ValueError):
        SubtitleSource("en", fmt, "https://s/x", kind=kind)  # type: ignore[arg-type]


def test_both_providers_satisfy_the_protocol() -> None:
    with HttpMediaProvider("http://127.0.0.1:9", "key", "host") as http_provider:
        assert isinstance(http_provider, MediaProvider) and http_provider.name == "http"
    assert isinstance(YtDlpMediaProvider(), MediaProvider)


def test_provider_from_settings() -> None:
    http_provider = media_provider_from_settings("http", url="http://127.0.0.1:9", key="k", host="h", timeout=2)
    assert isinstance(http_provider, HttpMediaProvider)
    ytdlp_provider = media_provider_from_settings("ytdlp", timeout=3, ytdlp_allow_generic=True)
    assert isinstance(ytdlp_provider, YtDlpMediaProvider)
    assert ytdlp_provider.options.socket_timeout == 3 and ytdlp_provider.options.allow_generic is True
    with pytest.raises(ValueError, match="MEDIATASKS_PROVIDER_KEY, MEDIATASKS_PROVIDER_HOST"):
        media_provider_from_settings("http", url="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="unknown"):
        media_provider_from_settings("rapid")
