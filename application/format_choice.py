"""Which of a media's formats to store, and how: a pure decision over `MediaFormat`s.

Video: the tallest rendition at or under `max_height`; among equals the preferred codec, then a
format that already carries audio, then the higher bitrate. Unless `mute`, audio comes from the
chosen format itself or from the best audio-only format, preferring the codec that fits the video's
container (AAC with H.264/H.265, Opus with VP9/AV1). Container: MP4 for H.264/H.265/AV1 with AAC,
WebM for VP9/AV1 with Opus/Vorbis, Matroska for any other pair.

Audio: the best audio-only format (else the audio of a muxed one); `best` keeps its codec (AAC → m4a,
Opus → ogg, MP3 → mp3), `m4a`/`mp3`/`opus` remux when the source already has that codec and encode
otherwise. Every step appends a reason to the choice, which the task's result shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from application.ports.errors import PermanentMediaError
from application.ports.media_provider import MediaFormat
from domain.media_options import DEFAULT_MAX_HEIGHT

_MP4_VIDEO = {"h264", "h265", "av1"}
_WEBM_VIDEO = {"vp9", "vp8", "av1"}
_MP4_AUDIO = {"aac", "mp3"}
_WEBM_AUDIO = {"opus", "vorbis"}
_CONTENT_TYPES = {
    "mp4": "video/mp4",
    "webm": "video/webm",
    "mkv": "video/x-matroska",
    "m4a": "audio/mp4",
    "ogg": "audio/ogg",
    "mp3": "audio/mpeg",
}
_EXTENSIONS = {"mp4": ".mp4", "webm": ".webm", "mkv": ".mkv", "m4a": ".m4a", "ogg": ".opus", "mp3": ".mp3"}


def codec_family(codec: str | None) -> str | None:
    """A codec string as providers write it ("avc1.64001e", "vp09.00.10.08", "mp4a.40.2") → "h264", "vp9", "aac"."""
    if codec is None:
        return None
    name = codec.lower().split(".")[0]
    aliases = {
        "avc1": "h264",
        "avc3": "h264",
        "avc": "h264",
        "h264": "h264",
        "hev1": "h265",
        "hvc1": "h265",
        "hevc": "h265",
        "h265": "h265",
        "vp09": "vp9",
        "vp9": "vp9",
        "vp8": "vp8",
        "av01": "av1",
        "av1": "av1",
        "mp4a": "aac",
        "aac": "aac",
        "opus": "opus",
        "vorbis": "vorbis",
        "mp3": "mp3",
        "mp4a.40.34": "mp3",
    }
    return aliases.get(name, name)


@dataclass(frozen=True)
class FormatRequest:
    """What the user asked for: a video (optionally muted) or an audio file, and the limits."""

    output: str = "video"
    max_height: int = DEFAULT_MAX_HEIGHT
    video_codec: str = "h264"
    mute: bool = False
    audio_format: str = "best"


@dataclass(frozen=True)
class FormatChoice:
    """The formats to fetch, the container to write and, if the audio must be encoded, its codec."""

    video: MediaFormat | None
    audio: MediaFormat | None
    container: str
    audio_encoder: str | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self.container]

    @property
    def extension(self) -> str:
        return _EXTENSIONS[self.container]

    @property
    def is_passthrough(self) -> bool:
        """One progressive file with everything wanted in it: streamed as it is, no remux."""
        return (
            self.video is not None
            and self.video.protocol == "https"
            and self.audio is self.video
            and self.audio_encoder is None
        )

    def sources(self) -> list[MediaFormat]:
        """The formats to fetch: the video's, and the audio's when it is another."""
        chosen = [self.video] if self.video is not None else []
        return chosen + ([self.audio] if self.audio is not None and self.audio is not self.video else [])

    def summary(self) -> dict[str, Any]:
        """What the task's result keeps of the choice (never URLs)."""
        return {
            "format_ids": [fmt.format_id for fmt in self.sources()],
            "video": self.video.summary() if self.video else None,
            "audio": self.audio.summary() if self.audio else None,
            "container": self.container,
            "audio_encoded_to": self.audio_encoder,
            "reasons": list(self.reasons),
        }


def choose_formats(formats: Sequence[MediaFormat], request: FormatRequest) -> FormatChoice:
    """The formats to store for `request`; raises PermanentMediaError("no_suitable_format") when none fits."""
    if request.output == "audio":
        return _choose_audio(formats, request)
    return _choose_video(formats, request)


def _no_format(message: str, **details: Any) -> PermanentMediaError:
    return PermanentMediaError("no_suitable_format", message, details=details)


def _choose_video(formats: Sequence[MediaFormat], request: FormatRequest) -> FormatChoice:
    videos = [fmt for fmt in formats if fmt.has_video]
    if not videos:
        raise _no_format("This media is offered in no video format.", best_available_height=None)
    within = [fmt for fmt in videos if fmt.height is None or fmt.height <= request.max_height]
    if not within:
        lowest = min(fmt.height or 0 for fmt in videos)
        raise _no_format(
            f"No video format is {request.max_height}p or lower; the lowest offered is {lowest}p.",
            best_available_height=lowest,
            max_height=request.max_height,
            available_heights=sorted({fmt.height or 0 for fmt in videos}),
        )
    reasons: list[str] = []

    def rank(fmt: MediaFormat) -> tuple[int, bool, bool, float]:
        return (
            fmt.height or 0,
            codec_family(fmt.vcodec) == request.video_codec,
            fmt.has_audio and not request.mute,
            fmt.bitrate or 0.0,
        )

    video = max(within, key=rank)
    reasons.append(
        f"video {video.format_id}: {video.height or '?'}p, the tallest at or under {request.max_height}p"
        + (f" of {len(within)} formats" if len(within) > 1 else "")
    )
    family = codec_family(video.vcodec)
    if family != request.video_codec and family != "unknown":
        reasons.append(f"no {request.video_codec} format at {video.height}p; {family} chosen")
    audio: MediaFormat | None = None
    if request.mute:
        reasons.append("mute: the audio is left out")
    elif video.has_audio:
        audio = video
        reasons.append(f"audio from {video.format_id} itself (video and audio in one format)")
    else:
        audio = _best_audio_for(formats, family)
        reasons.append(
            f"audio {audio.format_id}: {codec_family(audio.acodec)}, merged with the video"
            if audio
            else "no audio format offered: the video is stored without audio"
        )
    container = _container(video, audio)
    if container != "mp4" or video.protocol != "https" or audio is not video:
        reasons.append(f"written as {container}")
    return FormatChoice(video, audio, container, None, tuple(reasons))


def _best_audio_for(formats: Sequence[MediaFormat], video_family: str | None) -> MediaFormat | None:
    audio_only = [fmt for fmt in formats if fmt.has_audio and not fmt.has_video]
    if not audio_only:
        return None
    fits = _WEBM_AUDIO if video_family in ("vp9", "vp8") else _MP4_AUDIO
    return max(audio_only, key=lambda fmt: (codec_family(fmt.acodec) in fits, fmt.bitrate or 0.0))


def _container(video: MediaFormat, audio: MediaFormat | None) -> str:
    vfamily = codec_family(video.vcodec)
    afamily = codec_family(audio.acodec) if audio is not None else None
    if vfamily == "unknown":
        return "webm" if (video.ext or "").lower() == "webm" else "mp4"
    if vfamily in _MP4_VIDEO and afamily in (_MP4_AUDIO | {None}):
        return "mp4"
    if vfamily in _WEBM_VIDEO and afamily in (_WEBM_AUDIO | {None}):
        return "webm"
    return "mkv"


def _choose_audio(formats: Sequence[MediaFormat], request: FormatRequest) -> FormatChoice:
    candidates = [fmt for fmt in formats if fmt.has_audio]
    if not candidates:
        raise _no_format("This media is offered in no format with audio.", best_available_height=None)
    audio_only = [fmt for fmt in candidates if not fmt.has_video]
    pool = audio_only or candidates
    wanted = {"m4a": "aac", "mp3": "mp3", "opus": "opus"}.get(request.audio_format)

    def rank(fmt: MediaFormat) -> tuple[bool, float, int]:
        return (wanted is not None and codec_family(fmt.acodec) == wanted, fmt.bitrate or 0.0, -(fmt.height or 0))

    audio = max(pool, key=rank)
    reasons = [
        f"audio {audio.format_id}: {codec_family(audio.acodec)}"
        + (", the best audio-only format" if audio_only else ", from a format with video (no audio-only one)")
    ]
    source = codec_family(audio.acodec)
    container = {"aac": "m4a", "mp3": "mp3", "opus": "ogg"}
    encoder = None
    if request.audio_format == "best":
        target = container.get(source or "", "m4a")
        if target == "m4a" and source != "aac":
            encoder = "aac"
    else:
        target = container[wanted or "aac"]
        if source != wanted:
            encoder = wanted
    reasons.append(f"encoded to {encoder}" if encoder else f"{source} kept as it is (no re-encoding)")
    return FormatChoice(None, audio, target, encoder, tuple(reasons))
