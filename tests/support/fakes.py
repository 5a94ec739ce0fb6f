"""Fakes of the pipeline's ports, in memory, for the use-case suite (tests/support/use_cases.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from application.ports.blob_store import BlobRef
from application.ports.errors import PermanentMediaError
from application.ports.media_provider import MediaInfo, SubtitleSource, VideoSource

VIDEO_URL = "https://media.example/video.mp4"
VTT_URL = "https://media.example/en.vtt"
VTT = b"WEBVTT\n\n00:00:01.000 --> 00:00:02.000\nhello there\n"


def media_info(*, video: bool = True, subtitles: tuple[str, ...] = ("en",), size: int | None = 8) -> MediaInfo:
    return MediaInfo(
        platform="tiktok",
        media_id="6718335390845095173",
        title="a video",
        video=VideoSource(VIDEO_URL, size=size, mime_type="video/mp4") if video else None,
        subtitles=tuple(SubtitleSource(lang, "vtt", VTT_URL.replace("en", lang)) for lang in subtitles),
    )


@dataclass
class FakeProvider:
    """Answers with `info`, or raises `error`; `calls` counts the lookups."""

    info: MediaInfo = field(default_factory=media_info)
    error: Exception | None = None
    calls: int = 0

    def fetch_metadata(self, url: str) -> MediaInfo:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.info


@dataclass
class FakeResponse:
    body: bytes
    headers: Mapping[str, str]
    status_code: int = 200
    final_url: str = VIDEO_URL

    def iter_bytes(self) -> Iterator[bytes]:
        yield from (self.body[i : i + 4] for i in range(0, len(self.body), 4))


@dataclass
class FakeFetcher:
    """Serves `bodies` by URL (a video as `content_type`); `error` is raised by every fetch."""

    bodies: dict[str, bytes] = field(default_factory=lambda: {VIDEO_URL: b"\x00" * 8, VTT_URL: VTT})
    content_type: str = "video/mp4"
    error: Exception | None = None

    @contextmanager
    def stream(self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None) -> Iterator[FakeResponse]:
        if self.error is not None:
            raise self.error
        body = self.bodies[url]
        yield FakeResponse(body, {"content-type": self.content_type, "content-length": str(len(body))})

    def get_bytes(self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None) -> bytes:
        if self.error is not None:
            raise self.error
        return self.bodies[url]


class MemoryBlobs:
    """A BlobStore in a dict."""

    def __init__(self) -> None:
        self.blobs: dict[str, tuple[bytes, str]] = {}

    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str, max_bytes: int | None = None
    ) -> BlobRef:
        body = b"".join(chunks)
        if max_bytes is not None and len(body) > max_bytes:
            raise PermanentMediaError("too_large", "over the limit")
        self.blobs[key] = (body, content_type)
        return BlobRef(f"memory:///{key}", key, len(body), hashlib.sha256(body).hexdigest(), content_type)

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        body = self.blobs[key][0]
        yield body[start : None if end is None else end + 1]

    def stat(self, key: str) -> BlobRef | None:
        if key not in self.blobs:
            return None
        body, content_type = self.blobs[key]
        return BlobRef(f"memory:///{key}", key, len(body), hashlib.sha256(body).hexdigest(), content_type)

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    def check(self) -> None:
        return None


class MemoryMetadataCache:
    """A MetadataCache in a dict (no expiry: the suite's runs are short)."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.invalidated: list[str] = []

    def get(self, url_key: str) -> dict[str, Any] | None:
        return self.entries.get(url_key)

    def put(self, url_key: str, info: dict[str, Any], ttl_seconds: float) -> None:
        self.entries[url_key] = info

    def invalidate(self, url_key: str) -> None:
        self.invalidated.append(url_key)
        self.entries.pop(url_key, None)

    def purge_expired(self) -> int:
        return 0


def failing_after(calls: int, error: Exception, inner: Callable[..., Any]) -> Callable[..., Any]:
    """`inner`, raising `error` from its `calls`+1-th call on."""
    count = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        if count[0] > calls:
            raise error
        return inner(*args, **kwargs)

    return wrapped
