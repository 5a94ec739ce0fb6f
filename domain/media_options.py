"""What a task asks of the media: the height limit, the preferred video codec, muting, the audio format."""

from __future__ import annotations

from typing import Any

from domain.errors import ErrorCode, InvalidSubmission

VIDEO_CODECS = ("h264", "vp9", "av1")
AUDIO_FORMATS = ("best", "m4a", "mp3", "opus")
MIN_HEIGHT, MAX_HEIGHT, DEFAULT_MAX_HEIGHT = 144, 4320, 1080
DEFAULTS: dict[str, Any] = {
    "max_height": DEFAULT_MAX_HEIGHT,
    "video_codec": "h264",
    "mute": False,
    "audio_format": "best",
}


class InvalidMediaOptions(InvalidSubmission):
    code = ErrorCode.INVALID_MEDIA_OPTIONS


def check_media_options(options: dict[str, Any] | None) -> dict[str, Any]:
    """The options with defaults filled in; raises InvalidMediaOptions for an unknown or out-of-range one."""
    given = dict(options or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise InvalidMediaOptions(f"Unknown media options: {', '.join(unknown)}.")
    checked = {**DEFAULTS, **{key: value for key, value in given.items() if value is not None}}
    height = checked["max_height"]
    if isinstance(height, bool) or not isinstance(height, int) or not MIN_HEIGHT <= height <= MAX_HEIGHT:
        raise InvalidMediaOptions(f"max_height must be an integer from {MIN_HEIGHT} to {MAX_HEIGHT}.")
    if checked["video_codec"] not in VIDEO_CODECS:
        raise InvalidMediaOptions(f"video_codec must be one of {', '.join(VIDEO_CODECS)}.")
    if checked["audio_format"] not in AUDIO_FORMATS:
        raise InvalidMediaOptions(f"audio_format must be one of {', '.join(AUDIO_FORMATS)}.")
    if not isinstance(checked["mute"], bool):
        raise InvalidMediaOptions("mute must be true or false.")
    return checked
