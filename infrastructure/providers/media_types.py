"""Small lookups shared by the providers: subtitle format preference and video MIME types."""

from __future__ import annotations

import mimetypes

# When a track is offered in several formats, the first of these that is offered wins.
SUBTITLE_PREFERENCE: tuple[str, ...] = ("vtt", "srt", "json3", "ttml", "srv3", "srv1")


def video_mime_type(extension_or_mime: str | None) -> str | None:
    """`video/mp4` from `mp4` or from `video/mp4; codecs="avc1..."`; None when unknown."""
    if not extension_or_mime:
        return None
    if "/" in extension_or_mime:
        return extension_or_mime.split(";", 1)[0].strip().lower() or None
    guessed, _ = mimetypes.guess_type(f"media.{extension_or_mime.lower()}", strict=False)
    return guessed
