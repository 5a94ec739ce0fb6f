"""The `MediaProvider` port: what the worker pipeline needs to know about a media link.

A provider turns a media URL into a `MediaInfo`: title, duration, the formats the media is served in
(`MediaFormat`: progressive files, split video-only/audio-only files, HLS playlists, DASH manifests), a
`video` (the best progressive file, kept for providers that only know that) and which subtitle tracks
exist. It downloads nothing. Failures are raised as `PermanentMediaError` or
`TransientMediaError` (application/ports/errors.py).

The value objects are immutable and round-trip through `to_dict()`/`from_dict()` as plain JSON
values, the form stored in events and in the metadata cache.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from domain.text import clean_json, has_unsafe_characters

SubtitleFormat = Literal["vtt", "srt", "json3", "ttml", "srv1", "srv3"]
SubtitleKind = Literal["manual", "asr"]

SUBTITLE_FORMATS: tuple[str, ...] = get_args(SubtitleFormat)
SUBTITLE_KINDS: tuple[str, ...] = get_args(SubtitleKind)

#: Request headers a provider may ask the video download to send (what CDNs check); any other is dropped,
#: Host, Cookie, Authorization and the hop-by-hop headers among them.
FORWARDED_VIDEO_HEADERS = frozenset(
    {
        "user-agent",
        "referer",
        "origin",
        "accept",
        "accept-language",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-dest",
    }
)
MAX_FORWARDED_HEADER_LENGTH = 1024
#: A subtitle track's language as providers write it ("en", "pt-BR", "zh-Hans", "es-419", "en_US"); it names
#: a blob, so anything else ("../x", CR LF) skips the track.
SUBTITLE_LANGUAGE = re.compile(r"[A-Za-z0-9]{1,8}(?:[-_][A-Za-z0-9]{1,8}){0,4}")


def is_subtitle_language(lang: str) -> bool:
    """True for a language tag a track may be stored under."""
    return SUBTITLE_LANGUAGE.fullmatch(lang) is not None


@dataclass(frozen=True)
class VideoSource:
    """Where the video bytes can be fetched: the URL, its size and type if known, request headers to send."""

    url: str
    size: int | None = None
    mime_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "size": self.size, "mime_type": self.mime_type, "headers": dict(self.headers)}

    def forwarded_headers(self) -> dict[str, str]:
        """The headers the download may send: names in FORWARDED_VIDEO_HEADERS, values short and free of controls."""
        return {
            name: value
            for name, value in self.headers.items()
            if isinstance(name, str)
            and isinstance(value, str)
            and name.lower() in FORWARDED_VIDEO_HEADERS
            and len(value) <= MAX_FORWARDED_HEADER_LENGTH
            and not has_unsafe_characters(value)
            and "\n" not in value
            and "\r" not in value
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> VideoSource:
        return cls(
            url=data["url"],
            size=data.get("size"),
            mime_type=data.get("mime_type"),
            headers=dict(data.get("headers") or {}),
        )


@dataclass(frozen=True)
class SubtitleSource:
    """One subtitle track: its language, file format, URL, and whether people wrote it or speech recognition."""

    lang: str
    format: SubtitleFormat
    url: str
    kind: SubtitleKind = "manual"
    name: str | None = None

    def __post_init__(self) -> None:
        if self.format not in SUBTITLE_FORMATS:
            raise ValueError(f"unknown subtitle format {self.format!r}; expected one of {SUBTITLE_FORMATS}")
        if self.kind not in SUBTITLE_KINDS:
            raise ValueError(f"unknown subtitle kind {self.kind!r}; expected one of {SUBTITLE_KINDS}")

    def to_dict(self) -> dict[str, Any]:
        return {"lang": self.lang, "format": self.format, "url": self.url, "kind": self.kind, "name": self.name}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SubtitleSource:
        return cls(
            lang=data["lang"],
            format=data["format"],
            url=data["url"],
            kind=data.get("kind") or "manual",
            name=data.get("name"),
        )


FormatProtocol = Literal["https", "hls", "dash"]
FORMAT_PROTOCOLS: tuple[str, ...] = get_args(FormatProtocol)


@dataclass(frozen=True)
class MediaFormat:
    """One way the media is served: a file over HTTP(S), an HLS media playlist or a DASH representation.

    `url` is the file or the HLS media playlist; for DASH it is the manifest and `stream_id` names the
    representation in it. `vcodec`/`acodec` are None when the format has no such stream ("none" in
    yt-dlp's words); `bitrate` is in kbit/s; `filesize` is in bytes when the provider knows it.
    """

    format_id: str
    protocol: FormatProtocol
    url: str
    ext: str | None = None
    vcodec: str | None = None
    acodec: str | None = None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    bitrate: float | None = None
    filesize: int | None = None
    language: str | None = None
    stream_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.protocol not in FORMAT_PROTOCOLS:
            raise ValueError(f"unknown format protocol {self.protocol!r}; expected one of {FORMAT_PROTOCOLS}")

    @property
    def has_video(self) -> bool:
        return self.vcodec is not None

    @property
    def has_audio(self) -> bool:
        return self.acodec is not None

    def forwarded_headers(self) -> dict[str, str]:
        """The headers the download may send (see VideoSource.forwarded_headers)."""
        return VideoSource(self.url, headers=self.headers).forwarded_headers()

    def to_dict(self) -> dict[str, Any]:
        return {
            "format_id": self.format_id,
            "protocol": self.protocol,
            "url": self.url,
            "ext": self.ext,
            "vcodec": self.vcodec,
            "acodec": self.acodec,
            "width": self.width,
            "height": self.height,
            "fps": self.fps,
            "bitrate": self.bitrate,
            "filesize": self.filesize,
            "language": self.language,
            "stream_id": self.stream_id,
            "headers": dict(self.headers),
        }

    def summary(self) -> dict[str, Any]:
        """What a task's result says of a chosen format: never its (possibly signed) URL."""
        return {key: value for key, value in self.to_dict().items() if key not in ("url", "headers")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaFormat:
        return cls(
            format_id=str(data["format_id"]),
            protocol=data["protocol"],
            url=data["url"],
            ext=data.get("ext"),
            vcodec=data.get("vcodec"),
            acodec=data.get("acodec"),
            width=_optional_int(data.get("width")),
            height=_optional_int(data.get("height")),
            fps=_optional_float(data.get("fps")),
            bitrate=_optional_float(data.get("bitrate")),
            filesize=_optional_int(data.get("filesize")),
            language=data.get("language"),
            stream_id=data.get("stream_id"),
            headers=dict(data.get("headers") or {}),
        )


def _optional_int(value: Any) -> int | None:
    return int(value) if value is not None else None


def _optional_float(value: Any) -> float | None:
    return float(value) if value is not None else None


@dataclass(frozen=True)
class MediaInfo:
    """What a provider knows about one piece of media. `video` is None for subtitle-only media.

    `formats` lists every way the media is served (empty when the provider only knows `video`);
    `items` holds every media of a post with several (a carousel), the first included, each a MediaInfo.
    `is_live` and `drm` say why a media cannot be stored at all.
    """

    platform: str
    media_id: str
    title: str
    duration: float | None = None
    uploader: str | None = None
    thumbnail_url: str | None = None
    video: VideoSource | None = None
    subtitles: tuple[SubtitleSource, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)
    formats: tuple[MediaFormat, ...] = ()
    items: tuple[MediaInfo, ...] = ()
    is_live: bool = False
    drm: bool = False

    def playable_formats(self) -> tuple[MediaFormat, ...]:
        """The formats, with `video` as a progressive format when the provider listed none."""
        if self.formats or self.video is None:
            return self.formats
        return (
            MediaFormat(
                format_id="video",
                protocol="https",
                url=self.video.url,
                ext=_ext_of(self.video.mime_type),
                vcodec="unknown",
                acodec="unknown",
                filesize=self.video.size,
                headers=dict(self.video.headers),
            ),
        )

    def subtitles_for(self, lang: str) -> tuple[SubtitleSource, ...]:
        """Tracks in this language (exact tag or its primary subtag: 'en' matches 'en-US'), manual first."""
        wanted = lang.lower()
        matching = [
            track
            for track in self.subtitles
            if track.lang.lower() == wanted or track.lang.lower().split("-")[0] == wanted
        ]
        return tuple(sorted(matching, key=lambda track: track.kind != "manual"))

    def cleaned(self) -> MediaInfo:
        """This metadata as events and caches may hold it: text with control characters replaced
        (domain/text.py), only forwardable video headers, only tracks whose language is a tag."""
        info = MediaInfo.from_dict(clean_json(self.to_dict()))
        video = replace(info.video, headers=info.video.forwarded_headers()) if info.video else None
        tracks = tuple(track for track in info.subtitles if is_subtitle_language(track.lang))
        formats = tuple(replace(fmt, headers=fmt.forwarded_headers()) for fmt in info.formats)
        items = tuple(item.cleaned() for item in info.items)
        return replace(info, video=video, subtitles=tracks, formats=formats, items=items)

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "media_id": self.media_id,
            "title": self.title,
            "duration": self.duration,
            "uploader": self.uploader,
            "thumbnail_url": self.thumbnail_url,
            "video": self.video.to_dict() if self.video else None,
            "subtitles": [track.to_dict() for track in self.subtitles],
            "extra": dict(self.extra),
            "formats": [fmt.to_dict() for fmt in self.formats],
            "items": [item.to_dict() for item in self.items],
            "is_live": self.is_live,
            "drm": self.drm,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MediaInfo:
        duration = data.get("duration")
        return cls(
            platform=data["platform"],
            media_id=str(data["media_id"]),
            title=data.get("title") or "",
            duration=float(duration) if duration is not None else None,
            uploader=data.get("uploader"),
            thumbnail_url=data.get("thumbnail_url"),
            video=VideoSource.from_dict(data["video"]) if data.get("video") else None,
            subtitles=tuple(SubtitleSource.from_dict(track) for track in data.get("subtitles") or ()),
            extra=dict(data.get("extra") or {}),
            formats=tuple(MediaFormat.from_dict(fmt) for fmt in data.get("formats") or ()),
            items=tuple(MediaInfo.from_dict(item) for item in data.get("items") or ()),
            is_live=bool(data.get("is_live")),
            drm=bool(data.get("drm")),
        )


def _ext_of(mime_type: str | None) -> str | None:
    return {"video/mp4": "mp4", "video/webm": "webm", "video/quicktime": "mov"}.get((mime_type or "").lower())


@runtime_checkable
class MediaProvider(Protocol):
    """Finds out what a media link holds without downloading it."""

    name: str

    def fetch_metadata(self, url: str) -> MediaInfo:
        """The media behind `url`; raises PermanentMediaError or TransientMediaError."""
        ...
