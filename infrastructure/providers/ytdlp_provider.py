"""A `MediaProvider` backed by yt-dlp: metadata and subtitle tracks without downloading anything.

`extract_info(url, download=False)` runs the site's extractor; this module picks the best progressive
(audio and video in one file, plain HTTP) format and the subtitle tracks, and classifies yt-dlp's
errors into PermanentMediaError / TransientMediaError.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yt_dlp
from yt_dlp.networking.exceptions import HTTPError as YtDlpHTTPError
from yt_dlp.networking.exceptions import TransportError as YtDlpTransportError
from yt_dlp.utils import GeoRestrictedError, UnsupportedError

from application.ports.errors import MediaError, PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaFormat, MediaInfo, SubtitleSource, VideoSource
from domain.platforms import identify_platform
from infrastructure.providers.media_types import SUBTITLE_PREFERENCE, video_mime_type

_PRIVATE = re.compile(
    r"private video|video is private|account is private|login required|\blog in\b|sign in to confirm"
    r"|requires authentication|members[- ]only|confirm your age|age[- ]restricted|not available in your country"
)
_NOT_FOUND = re.compile(
    r"http error 4(?:04|10)|video unavailable|has been removed|does not exist|has been deleted|no longer available"
    r"|not found"
)
_UNSUPPORTED = re.compile(r"unsupported url|no suitable extractor")
_RATE_LIMITED = re.compile(r"http error 429|too many requests")
_SERVER_ERROR = re.compile(r"http error 5\d\d")
_TIMEOUT = re.compile(r"timed out|timeout")
_NETWORK = re.compile(
    r"unable to download|connection refused|connection reset|name resolution|network is unreachable"
    r"|urlopen error|remote end closed|connection aborted|eof occurred|incompleteread|bytes read"
)


@dataclass(frozen=True)
class YtDlpOptions:
    """Settings of the yt-dlp provider.

    `allow_generic` enables yt-dlp's generic extractor (any web page with an HTML5 <video>); it is off
    in production, where only the site extractors of supported platforms run, and on in tests that serve
    pages from 127.0.0.1. `include_translated_captions` keeps YouTube's machine-translated ASR tracks
    (about a hundred per video) instead of only the original-language ones.
    """

    socket_timeout: float = 15.0
    allow_generic: bool = False
    include_translated_captions: bool = False
    extra_params: Mapping[str, Any] = field(default_factory=dict)


class _SilentLogger:
    """yt-dlp logs nothing of its own; its errors come back as exceptions."""

    def debug(self, message: str) -> None: ...

    def info(self, message: str) -> None: ...

    def warning(self, message: str) -> None: ...

    def error(self, message: str) -> None: ...


class YtDlpMediaProvider:
    """Asks yt-dlp what a link holds (metadata, best progressive format, subtitle tracks)."""

    name = "ytdlp"

    def __init__(self, options: YtDlpOptions | None = None) -> None:
        self.options = options or YtDlpOptions()

    def _params(self) -> dict[str, Any]:
        return {
            "quiet": True,
            "no_warnings": True,
            "noprogress": True,
            "skip_download": True,
            "noplaylist": True,
            "cachedir": False,
            "socket_timeout": self.options.socket_timeout,
            "retries": 0,
            "extractor_retries": 0,
            "ignore_no_formats_error": True,
            "logger": _SilentLogger(),
            "allowed_extractors": ["default"] if self.options.allow_generic else ["default", "-generic"],
            **self.options.extra_params,
        }

    def fetch_metadata(self, url: str) -> MediaInfo:
        """The media behind `url`, from yt-dlp; raises PermanentMediaError or TransientMediaError."""
        try:
            with yt_dlp.YoutubeDL(self._params()) as ydl:
                info = ydl.extract_info(url, download=False)
        except Exception as error:  # yt-dlp raises DownloadError and friends; classify them all
            raise classify_ytdlp_error(error) from error
        if not info:
            raise PermanentMediaError("media_not_found", "yt-dlp found nothing at this URL", details={"url": url})
        try:
            return media_info_from_ytdlp(
                info, url, include_translated_captions=self.options.include_translated_captions
            )
        except (TypeError, ValueError, KeyError, AttributeError) as error:  # an info dict of an unexpected shape
            raise PermanentMediaError(
                "provider_bad_response",
                f"yt-dlp's answer has an unexpected shape: {type(error).__name__}",
                details={"url": url},
            ) from error


def media_info_from_ytdlp(info: Mapping[str, Any], url: str, *, include_translated_captions: bool = False) -> MediaInfo:
    """A MediaInfo from a yt-dlp info dict; a playlist result (a post with several media) gives `items`."""
    if info.get("_type") == "playlist":
        entries = [entry for entry in info.get("entries") or () if entry]
        if not entries:
            raise PermanentMediaError("media_not_found", "the page holds no media", details={"url": url})
        first = _single_media(entries[0], url, include_translated_captions)
        if len(entries) == 1:
            return first
        items = tuple(_single_media(entry, url, include_translated_captions) for entry in entries)
        return replace(first, items=items)
    return _single_media(info, url, include_translated_captions)


def _single_media(info: Mapping[str, Any], url: str, include_translated_captions: bool) -> MediaInfo:
    known = identify_platform(url)
    duration = info.get("duration")
    subtitles = [
        *_subtitle_tracks(info.get("subtitles") or {}, "manual", include_translated=True),
        *_subtitle_tracks(info.get("automatic_captions") or {}, "asr", include_translated=include_translated_captions),
    ]
    return MediaInfo(
        platform=known.name if known else str(info.get("extractor") or info.get("extractor_key") or "unknown").lower(),
        media_id=str(info.get("id") or info.get("display_id") or ""),
        title=str(info.get("title") or ""),
        duration=float(duration) if duration is not None else None,
        uploader=info.get("uploader") or info.get("channel"),
        thumbnail_url=info.get("thumbnail"),
        video=_best_progressive(info),
        subtitles=tuple(subtitles),
        formats=tuple(media_formats_from_ytdlp(info)),
        is_live=bool(info.get("is_live")) or info.get("live_status") in ("is_live", "is_upcoming"),
        drm=bool(info.get("_has_drm")) or any(fmt.get("has_drm") for fmt in info.get("formats") or ()),
        extra={
            "provider": YtDlpMediaProvider.name,
            "extractor": info.get("extractor") or info.get("extractor_key"),
            "webpage_url": info.get("webpage_url"),
        },
    )


#: yt-dlp's protocol names → the port's.
_PROTOCOLS = {
    "https": "https",
    "http": "https",
    "m3u8_native": "hls",
    "m3u8": "hls",
    "http_dash_segments": "dash",
    "dash": "dash",
}


def media_formats_from_ytdlp(info: Mapping[str, Any]) -> Iterator[MediaFormat]:
    """yt-dlp's `formats` (and any `requested_formats` not among them) as MediaFormats; others are skipped.

    HLS formats point at their media playlist; DASH formats at the manifest, with the representation id
    (yt-dlp's format id less its `dash-` prefix) as `stream_id`.
    """
    seen: set[str] = set()
    for fmt in [*(info.get("formats") or ()), *(info.get("requested_formats") or ())]:
        protocol = _PROTOCOLS.get(str(fmt.get("protocol") or ""))
        format_id = str(fmt.get("format_id") or "")
        if protocol is None or not format_id or format_id in seen or fmt.get("has_drm"):
            continue
        url = fmt.get("manifest_url") if protocol == "dash" else fmt.get("url")
        if not url:
            continue
        seen.add(format_id)
        size = fmt.get("filesize") or fmt.get("filesize_approx")
        yield MediaFormat(
            format_id=format_id,
            protocol=protocol,
            url=str(url),
            ext=fmt.get("ext"),
            vcodec=_codec(fmt.get("vcodec")),
            acodec=_codec(fmt.get("acodec")),
            width=_number(fmt.get("width"), int),
            height=_number(fmt.get("height"), int),
            fps=_number(fmt.get("fps"), float),
            bitrate=_number(fmt.get("tbr"), float),
            filesize=int(size) if size else None,
            language=fmt.get("language"),
            stream_id=format_id.removeprefix("dash-") if protocol == "dash" else None,
            headers={str(key): str(value) for key, value in (fmt.get("http_headers") or {}).items()},
        )


def _codec(value: Any) -> str | None:
    """yt-dlp says "none" for an absent stream and leaves the codec out when it does not know it."""
    if value == "none":
        return None
    return str(value) if value else "unknown"


def _number(value: Any, kind: type) -> Any:
    try:
        return kind(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _is_progressive(fmt: Mapping[str, Any]) -> bool:
    url = fmt.get("url")
    if not url:
        return False
    protocol = fmt.get("protocol") or urlsplit(url).scheme
    return protocol in ("http", "https") and fmt.get("vcodec") != "none" and fmt.get("acodec") != "none"


def _best_progressive(info: Mapping[str, Any]) -> VideoSource | None:
    """The best format with audio and video in one HTTP file; yt-dlp lists formats worst first."""
    formats = info.get("formats") or ([info] if info.get("url") else [])
    candidates = [fmt for fmt in formats if _is_progressive(fmt)]
    if not candidates:
        return None
    best = candidates[-1]
    size = best.get("filesize") or best.get("filesize_approx")
    return VideoSource(
        url=best["url"],
        size=int(size) if size else None,
        mime_type=video_mime_type(best.get("ext")),
        headers={str(key): str(value) for key, value in (best.get("http_headers") or {}).items()},
    )


def _subtitle_tracks(
    by_lang: Mapping[str, Iterable[Mapping[str, Any]]], kind: str, *, include_translated: bool
) -> Iterator[SubtitleSource]:
    seen: set[str] = set()
    for lang, offers in by_lang.items():
        if lang == "live_chat":
            continue
        usable = [offer for offer in offers if offer.get("url") and offer.get("ext") in SUBTITLE_PREFERENCE]
        if not usable:
            continue
        best = min(usable, key=lambda offer: SUBTITLE_PREFERENCE.index(offer["ext"]))
        if not include_translated and "tlang" in parse_qs(urlsplit(best["url"]).query):
            continue
        base_lang = lang.removesuffix("-orig")
        if base_lang in seen:
            continue
        seen.add(base_lang)
        yield SubtitleSource(lang=base_lang, format=best["ext"], url=best["url"], kind=kind, name=best.get("name"))  # type: ignore[arg-type]  # ext is one of SUBTITLE_PREFERENCE (checked above)


def _causes(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps: yt-dlp keeps the original in `exc_info` and `cause`."""
    pending: list[BaseException] = [error]
    seen: set[int] = set()
    while pending:
        current = pending.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        exc_info = getattr(current, "exc_info", None)
        wrapped = [
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
            getattr(current, "cause", None),
            current.__cause__,
            current.__context__,
        ]
        pending.extend(item for item in wrapped if isinstance(item, BaseException))


def classify_ytdlp_error(error: BaseException) -> MediaError:
    """Map a yt-dlp exception (usually DownloadError wrapping an ExtractorError) to a classified error."""
    message = str(error)
    details: dict[str, Any] = {"provider": YtDlpMediaProvider.name, "message": message[:500]}
    for cause in _causes(error):
        if isinstance(cause, GeoRestrictedError):
            return PermanentMediaError("media_private", "the media is not available in this region", details=details)
        if isinstance(cause, UnsupportedError):
            return PermanentMediaError("unsupported_url", "no extractor supports this URL", details=details)
        if isinstance(cause, YtDlpHTTPError):
            return _classify_status(cause.status, details)
    text = " ".join(str(cause) for cause in _causes(error)).lower()
    if _PRIVATE.search(text):
        details["bot_check"] = "sign in to confirm" in text
        return PermanentMediaError("media_private", "the media is private or needs a login", details=details)
    if _UNSUPPORTED.search(text):
        return PermanentMediaError("unsupported_url", "no extractor supports this URL", details=details)
    if _RATE_LIMITED.search(text):
        return TransientMediaError("rate_limited", "the platform is rate limiting us", details=details)
    if _SERVER_ERROR.search(text):
        return TransientMediaError("provider_unavailable", "the platform failed", details=details)
    if _NOT_FOUND.search(text):
        return PermanentMediaError("media_not_found", "the media does not exist or was removed", details=details)
    if _TIMEOUT.search(text):
        return TransientMediaError("timeout", "the platform did not answer in time", details=details)
    if any(isinstance(cause, YtDlpTransportError) for cause in _causes(error)) or _NETWORK.search(text):
        return TransientMediaError("provider_unavailable", "the platform could not be reached", details=details)
    return TransientMediaError("provider_error", "yt-dlp failed", details=details)


def _classify_status(status: int, details: dict[str, Any]) -> MediaError:
    details["status"] = status
    if status in (404, 410):
        return PermanentMediaError("media_not_found", "the media does not exist or was removed", details=details)
    if status in (401, 403):
        return PermanentMediaError("media_private", "the platform refuses access to this media", details=details)
    if status == 429:
        return TransientMediaError("rate_limited", "the platform is rate limiting us", details=details)
    if status >= 500:
        return TransientMediaError("provider_unavailable", f"the platform failed ({status})", details=details)
    return PermanentMediaError("unsupported_url", f"the platform answered {status}", details=details)
