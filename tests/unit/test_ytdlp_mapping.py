"""The yt-dlp provider's pure parts: info dict → MediaInfo, and yt-dlp errors → classified errors."""

from __future__ import annotations

import io
import sys
from typing import Any

import pytest
from yt_dlp.networking import Response
from yt_dlp.networking.exceptions import HTTPError, TransportError
from yt_dlp.utils import DownloadError, ExtractorError, GeoRestrictedError, UnsupportedError

from application.ports.errors import PermanentMediaError, TransientMediaError
from infrastructure.providers.ytdlp_provider import classify_ytdlp_error, media_info_from_ytdlp

YOUTUBE_URL = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


def fmt(format_id: str, ext: str, vcodec: str, acodec: str, protocol: str = "https", **more: Any) -> dict[str, Any]:
    return {
        "format_id": format_id,
        "ext": ext,
        "vcodec": vcodec,
        "acodec": acodec,
        "protocol": protocol,
        "url": f"https://cdn.example/{format_id}.{ext}",
        **more,
    }


def sub(ext: str, url: str, name: str | None = None) -> dict[str, Any]:
    return {"ext": ext, "url": url, **({"name": name} if name else {})}


INFO: dict[str, Any] = {
    "id": "dQw4w9WgXcQ",
    "title": "A title",
    "duration": 212,
    "uploader": "Someone",
    "thumbnail": "https://i.example/t.jpg",
    "extractor_key": "Youtube",
    "formats": [
        fmt("18", "mp4", "avc1", "mp4a", filesize=1000, http_headers={"User-Agent": "UA"}),
        fmt("hls-720", "mp4", "avc1", "mp4a", protocol="m3u8_native"),
        fmt("137", "mp4", "avc1", "none"),
        fmt("140", "m4a", "none", "mp4a"),
        fmt("22", "mp4", "avc1", "mp4a", filesize_approx=5000.0, http_headers={"User-Agent": "UA", "Referer": "r"}),
        fmt("248", "webm", "vp9", "none"),
    ],
    "subtitles": {
        "en": [
            sub("json3", "https://s/en.json3"),
            sub("srv3", "https://s/en.srv3"),
            sub("vtt", "https://s/en.vtt", "English"),
        ],
        "de": [sub("ttml", "https://s/de.ttml"), sub("srt", "https://s/de.srt")],
        "fr": [sub("ass", "https://s/fr.ass")],
        "live_chat": [sub("json", "https://s/chat.json")],
    },
    "automatic_captions": {
        "en-orig": [sub("srv1", "https://s/asr?lang=en&fmt=srv1"), sub("json3", "https://s/asr?lang=en&fmt=json3")],
        "en": [sub("json3", "https://s/asr?lang=en&fmt=json3")],
        "de": [sub("vtt", "https://s/asr?lang=en&tlang=de&fmt=vtt")],
    },
}


def test_best_progressive_format_and_headers() -> None:
    info = media_info_from_ytdlp(INFO, YOUTUBE_URL)
    assert info.platform == "youtube" and info.media_id == "dQw4w9WgXcQ" and info.duration == 212.0
    assert info.video is not None
    assert info.video.url == "https://cdn.example/22.mp4", "the last progressive HTTP format (yt-dlp sorts worst first)"
    assert info.video.size == 5000
    assert info.video.mime_type == "video/mp4"
    assert info.video.headers == {"User-Agent": "UA", "Referer": "r"}


def test_subtitles_manual_first_preferred_format_no_translations() -> None:
    info = media_info_from_ytdlp(INFO, YOUTUBE_URL)
    tracks = [(track.lang, track.kind, track.format) for track in info.subtitles]
    assert tracks == [("en", "manual", "vtt"), ("de", "manual", "srt"), ("en", "asr", "json3")]
    assert info.subtitles[0].name == "English"


def test_translated_captions_can_be_kept() -> None:
    info = media_info_from_ytdlp(INFO, YOUTUBE_URL, include_translated_captions=True)
    assert ("de", "asr") in [(track.lang, track.kind) for track in info.subtitles]


def test_no_progressive_format_means_no_video() -> None:
    info = media_info_from_ytdlp({**INFO, "formats": [fmt("137", "mp4", "avc1", "none")]}, YOUTUBE_URL)
    assert info.video is None


def test_single_url_result_and_playlist_result() -> None:
    direct = {"id": "x", "title": "t", "url": "http://127.0.0.1:1/v.mp4", "ext": "mp4", "extractor": "generic"}
    info = media_info_from_ytdlp(direct, "http://127.0.0.1:1/page")
    assert info.platform == "generic"
    assert info.video is not None and info.video.url == "http://127.0.0.1:1/v.mp4"
    playlist = {"_type": "playlist", "entries": [direct, {**direct, "id": "y"}]}
    assert media_info_from_ytdlp(playlist, "http://127.0.0.1:1/page").media_id == "x"
    with pytest.raises(PermanentMediaError) as raised:
        media_info_from_ytdlp({"_type": "playlist", "entries": []}, "http://127.0.0.1:1/page")
    assert raised.value.code == "media_not_found"


def wrapped(inner: BaseException) -> DownloadError:
    """What yt-dlp raises: a DownloadError carrying the extractor's exception in exc_info."""
    try:
        raise inner
    except BaseException:
        return DownloadError(f"ERROR: {inner}", sys.exc_info())


def http_error(status: int) -> HTTPError:
    return HTTPError(Response(io.BytesIO(b""), "https://x.example/", {}, status=status))


def extractor_error_caused_by(cause: BaseException) -> ExtractorError:
    try:
        raise cause
    except BaseException as error:
        return ExtractorError("Unable to download webpage", cause=error)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (
            wrapped(GeoRestrictedError("The uploader has not made this video available in your country")),
            "media_private",
        ),
        (wrapped(UnsupportedError("https://example.com/")), "unsupported_url"),
        (DownloadError("ERROR: [youtube] abc: Private video. Sign in if you've been granted access"), "media_private"),
        (DownloadError("ERROR: [youtube] abc: Sign in to confirm you’re not a bot"), "media_private"),
        (DownloadError("ERROR: [instagram] abc: login required to access this content"), "media_private"),
        (
            DownloadError("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader"),
            "media_not_found",
        ),
        (DownloadError("ERROR: [generic] Unable to download webpage: HTTP Error 404: Not Found"), "media_not_found"),
        (wrapped(extractor_error_caused_by(http_error(404))), "media_not_found"),
        (wrapped(extractor_error_caused_by(http_error(410))), "media_not_found"),
        (DownloadError("ERROR: Unsupported URL: https://example.com/"), "unsupported_url"),
        (DownloadError("ERROR: No suitable extractor found for URL http://127.0.0.1/x"), "unsupported_url"),
    ],
)
def test_permanent_yt_dlp_errors(error: BaseException, code: str) -> None:
    classified = classify_ytdlp_error(error)
    assert isinstance(classified, PermanentMediaError)
    assert classified.code == code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (wrapped(extractor_error_caused_by(http_error(429))), "rate_limited"),
        (DownloadError("ERROR: Unable to download webpage: HTTP Error 429: Too Many Requests"), "rate_limited"),
        (wrapped(extractor_error_caused_by(http_error(503))), "provider_unavailable"),
        (DownloadError("ERROR: Unable to download JSON metadata: HTTP Error 502: Bad Gateway"), "provider_unavailable"),
        (DownloadError("ERROR: Unable to download webpage: The read operation timed out"), "timeout"),
        (wrapped(extractor_error_caused_by(TransportError("[Errno 111] Connection refused"))), "provider_unavailable"),
        (
            DownloadError(
                "ERROR: Unable to download webpage: <urlopen error [Errno -3] Temporary failure in name resolution>"
            ),
            "provider_unavailable",
        ),
        (DownloadError("ERROR: something nobody has seen before"), "provider_error"),
        (RuntimeError("a bug inside an extractor"), "provider_error"),
    ],
)
def test_transient_yt_dlp_errors(error: BaseException, code: str) -> None:
    classified = classify_ytdlp_error(error)
    assert isinstance(classified, TransientMediaError)
    assert classified.code == code


def test_bot_check_is_flagged_in_details() -> None:
    classified = classify_ytdlp_error(DownloadError("ERROR: [youtube] x: Sign in to confirm you’re not a bot."))
    assert classified.details["bot_check"] is True
    assert classify_ytdlp_error(DownloadError("ERROR: Private video")).details["bot_check"] is False


def test_an_info_dict_of_an_unexpected_shape_is_a_permanent_bad_response(monkeypatch: pytest.MonkeyPatch) -> None:
    from infrastructure.providers import ytdlp_provider

    class Answering:
        def __init__(self, params: dict) -> None: ...

        def __enter__(self) -> Answering:
            return self

        def __exit__(self, *exc_info: object) -> None: ...

        def extract_info(self, url: str, download: bool) -> dict:
            return {"id": "1", "title": "t", "duration": "not a number"}

    monkeypatch.setattr(ytdlp_provider.yt_dlp, "YoutubeDL", Answering)
    with pytest.raises(PermanentMediaError) as raised:
        ytdlp_provider.YtDlpMediaProvider().fetch_metadata("https://www.tiktok.com/@a/video/1")
    assert raised.value.code == "provider_bad_response"


def test_formats_are_mapped_with_split_streams_playlists_and_live() -> None:
    from infrastructure.providers.ytdlp_provider import media_info_from_ytdlp

    info = media_info_from_ytdlp(
        {
            "id": "v",
            "title": "t",
            "live_status": "not_live",
            "formats": [
                {
                    "format_id": "hls-720",
                    "protocol": "m3u8_native",
                    "url": "https://cdn.example/720.m3u8",
                    "vcodec": "avc1.64001f",
                    "acodec": "mp4a.40.2",
                    "height": 720,
                    "tbr": 2000,
                },
                {
                    "format_id": "dash-v",
                    "protocol": "http_dash_segments",
                    "url": "https://cdn.example/frag",
                    "manifest_url": "https://cdn.example/m.mpd",
                    "vcodec": "vp09.00.40.08",
                    "acodec": "none",
                    "height": 1080,
                },
                {"format_id": "rtmp", "protocol": "rtmp", "url": "rtmp://cdn.example/x"},
                {"format_id": "drm", "protocol": "https", "url": "https://cdn.example/d.mp4", "has_drm": True},
            ],
            "requested_formats": [
                {
                    "format_id": "251",
                    "protocol": "https",
                    "url": "https://cdn.example/a.webm",
                    "vcodec": "none",
                    "acodec": "opus",
                    "tbr": 160,
                }
            ],
        },
        "https://www.youtube.com/watch?v=v",
    )
    assert [(f.format_id, f.protocol, f.vcodec, f.acodec) for f in info.formats] == [
        ("hls-720", "hls", "avc1.64001f", "mp4a.40.2"),
        ("dash-v", "dash", "vp09.00.40.08", None),
        ("251", "https", None, "opus"),
    ]
    assert info.formats[1].url == "https://cdn.example/m.mpd" and info.formats[1].stream_id == "v"
    assert not info.is_live
    entries = {"_type": "playlist", "entries": [{"id": "a", "title": "a"}, {"id": "b", "title": "b"}]}
    assert [item.media_id for item in media_info_from_ytdlp(entries, "https://www.instagram.com/p/x/").items] == [
        "a",
        "b",
    ]
    assert media_info_from_ytdlp({"id": "l", "live_status": "is_live"}, "https://www.youtube.com/watch?v=l").is_live
