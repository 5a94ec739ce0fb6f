"""YouTube InnerTube player responses (`/youtubei/v1/player`) turned into a `MediaInfo`.

Pure: takes the decoded JSON, returns a MediaInfo or raises a classified error. Caption tracks are
requested as json3 (`fmt=json3` on their baseUrl); tracks with `kind: "asr"` are speech recognition.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaInfo, SubtitleSource, VideoSource
from infrastructure.providers.media_types import video_mime_type

# playabilityStatus.status values other than OK, and what they mean for a task.
_UNPLAYABLE_CODES = {
    "LOGIN_REQUIRED": "media_private",
    "UNPLAYABLE": "media_private",
    "AGE_CHECK_REQUIRED": "media_private",
    "CONTENT_CHECK_REQUIRED": "media_private",
    "ERROR": "media_not_found",
    "LIVE_STREAM_OFFLINE": "unsupported_content",
}


def _text(node: Any) -> str | None:
    """InnerTube text: either {"simpleText": ...} or {"runs": [{"text": ...}, ...]}."""
    if not isinstance(node, dict):
        return None
    if "simpleText" in node:
        return str(node["simpleText"])
    runs = node.get("runs")
    return "".join(str(run.get("text", "")) for run in runs) if isinstance(runs, list) else None


def with_format(base_url: str, fmt: str) -> str:
    """The caption URL with its `fmt` query parameter set to `fmt` (replacing srv3 and the like)."""
    parts = urlsplit(base_url)
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "fmt"]
    query.append(("fmt", fmt))
    return urlunsplit(parts._replace(query=urlencode(query, safe=",")))


def _check_playable(response: dict[str, Any]) -> None:
    playability = response.get("playabilityStatus") or {}
    status = playability.get("status")
    if status == "OK":
        return
    reason = str(playability.get("reason") or status or "unplayable")
    details = {"playability_status": status, "reason": reason, "bot_check": "not a bot" in reason.lower()}
    code = _UNPLAYABLE_CODES.get(str(status))
    if code is None:
        raise TransientMediaError("provider_bad_response", f"YouTube says {status}: {reason}", details=details)
    raise PermanentMediaError(code, f"YouTube says: {reason}", details=details)


def _caption_tracks(response: dict[str, Any]) -> tuple[tuple[SubtitleSource, ...], list[str]]:
    renderer = (response.get("captions") or {}).get("playerCaptionsTracklistRenderer") or {}
    tracks = [
        SubtitleSource(
            lang=str(track["languageCode"]),
            format="json3",
            url=with_format(str(track["baseUrl"]), "json3"),
            kind="asr" if track.get("kind") == "asr" else "manual",
            name=_text(track.get("name")),
        )
        for track in renderer.get("captionTracks") or ()
        if track.get("baseUrl") and track.get("languageCode")
    ]
    tracks.sort(key=lambda track: track.kind != "manual")
    translations = [str(lang["languageCode"]) for lang in renderer.get("translationLanguages") or ()]
    return tuple(tracks), translations


def _best_progressive(response: dict[str, Any]) -> VideoSource | None:
    """The tallest progressive format with a plain URL (ciphered formats need a player to decode)."""
    formats = [fmt for fmt in (response.get("streamingData") or {}).get("formats") or () if fmt.get("url")]
    if not formats:
        return None
    best = max(formats, key=lambda fmt: (fmt.get("height") or 0, fmt.get("bitrate") or 0))
    length = best.get("contentLength")
    return VideoSource(
        url=best["url"],
        size=int(length) if length else None,
        mime_type=video_mime_type(best.get("mimeType")),
    )


def media_info_from_innertube(response: dict[str, Any]) -> MediaInfo:
    """A MediaInfo from a player response; raises PermanentMediaError when the video cannot be played."""
    _check_playable(response)
    details = response.get("videoDetails")
    if not isinstance(details, dict) or not details.get("videoId"):
        raise TransientMediaError("provider_bad_response", "the player response has no videoDetails")
    thumbnails = (details.get("thumbnail") or {}).get("thumbnails") or []
    length = details.get("lengthSeconds")
    subtitles, translations = _caption_tracks(response)
    return MediaInfo(
        platform="youtube",
        media_id=str(details["videoId"]),
        title=str(details.get("title") or ""),
        duration=float(length) if length not in (None, "") else None,
        uploader=details.get("author"),
        thumbnail_url=thumbnails[-1].get("url") if thumbnails else None,
        video=_best_progressive(response),
        subtitles=subtitles,
        extra={
            "provider": "innertube",
            "translation_languages": translations,
            "captions_available": "captions" in response,
            "is_live": bool(details.get("isLiveContent")),
        },
    )
