"""Fetches chosen formats through the SSRF-guarded fetcher and remuxes them (the `MediaAssembler` port).

Progressive files stream straight into the demuxer; HLS and DASH segments are fetched one at a
time (each bounded, retried on a transient failure) and fed to PyAV as a byte iterator. Nothing but
the fetcher opens a connection: FFmpeg only ever sees bytes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from Crypto.Cipher import AES
from Crypto.Util.Padding import unpad

from application.format_choice import FormatChoice
from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_fetcher import MediaFetcher
from application.ports.media_provider import MediaFormat
from infrastructure.media_formats.manifests import (
    Segment,
    SegmentPlan,
    WantedRepresentation,
    dash_plan,
    hls_plan,
    hls_variants,
)


@dataclass(frozen=True)
class AssemblyLimits:
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_segment_bytes: int = 64 * 1024 * 1024
    segment_retries: int = 3
    retry_backoff_seconds: float = 0.2
    max_duration_seconds: float = 4 * 3600


class _Assembly:
    """One output in the making (an `AssembledMedia`)."""

    def __init__(
        self,
        assembler: StreamingMediaAssembler,
        choice: FormatChoice,
        plans: dict[str, SegmentPlan | None],
        duration: float | None,
        expected: int | None,
    ) -> None:
        self._assembler, self._choice, self._plans = assembler, choice, plans
        self.content_type = choice.content_type
        self.extension = choice.extension
        self.duration = duration
        self.expected_fetch_bytes = expected
        self.bytes_fetched = 0

    def iter_bytes(self) -> Iterator[bytes]:
        # PyAV loads FFmpeg's libraries (about 50 MiB of RSS): only a process that remuxes pays for them.
        from infrastructure.media_formats.remux import AUDIO_ENCODERS, OutputPlan, remux

        choice = self._choice
        inputs = []
        if choice.video is not None:
            together = choice.audio is choice.video
            inputs.append(self._input(choice.video, video=True, audio=together))
        if choice.audio is not None and choice.audio is not choice.video:
            inputs.append(self._input(choice.audio, video=False, audio=True))
        encoder = AUDIO_ENCODERS[choice.audio_encoder] if choice.audio_encoder else None
        yield from remux(inputs, OutputPlan(choice.container, encoder))

    def _input(self, fmt: MediaFormat, *, video: bool, audio: bool) -> Any:
        from infrastructure.media_formats.remux import RemuxInput

        plan = self._plans[fmt.format_id]
        if plan is None:
            return RemuxInput(self._counted(self._assembler.progressive(fmt)), video=video, audio=audio)
        return RemuxInput(
            self._counted(self._assembler.segments(plan, fmt)), video=video, audio=audio, format_hint=plan.format_hint
        )

    def _counted(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.bytes_fetched += len(chunk)
            yield chunk


class StreamingMediaAssembler:
    """Resolves HLS/DASH/progressive formats and streams their remux (see the module docstring)."""

    def __init__(self, fetcher: MediaFetcher, limits: AssemblyLimits | None = None, sleep: object = time.sleep) -> None:
        self.fetcher = fetcher
        self.limits = limits or AssemblyLimits()
        self._sleep = sleep

    @contextmanager
    def assemble(self, choice: FormatChoice, *, max_bytes: int) -> Iterator[_Assembly]:
        plans: dict[str, SegmentPlan | None] = {}
        for fmt in choice.sources():
            plans[fmt.format_id] = self.plan(fmt)
        durations = [plan.duration for plan in plans.values() if plan is not None and plan.duration]
        duration = max(durations) if durations else None
        if duration and duration > self.limits.max_duration_seconds:
            raise PermanentMediaError(
                "too_long",
                f"The stream lasts {duration:.0f} s; the limit is {self.limits.max_duration_seconds:.0f} s.",
                details={"duration": duration, "max_duration": self.limits.max_duration_seconds},
            )
        yield _Assembly(self, choice, plans, duration, _expected_bytes(plans, choice, duration))

    # resolving --------------------------------------------------------------------

    def plan(self, fmt: MediaFormat) -> SegmentPlan | None:
        """The segment plan of an HLS/DASH format (None for a progressive file)."""
        if fmt.protocol == "https":
            return None
        text = self._manifest(fmt)
        if fmt.protocol == "hls":
            variants = hls_variants(text, fmt.url)
            if variants:  # a master playlist: its variant of this height, else its best
                variant = max(variants, key=lambda v: (v.height == fmt.height, v.height or 0, v.bitrate or 0))
                text = self._manifest(MediaFormat(fmt.format_id, "hls", variant.url, headers=fmt.headers))
                return hls_plan(text, variant.url)
            return hls_plan(text, fmt.url)
        return dash_plan(text, fmt.url, _wanted_representation(fmt))

    def _manifest(self, fmt: MediaFormat) -> str:
        try:
            data = self.fetcher.get_bytes(
                fmt.url, max_bytes=self.limits.max_manifest_bytes, headers=fmt.forwarded_headers()
            )
        except PermanentMediaError as error:
            if error.code == "too_large":
                raise PermanentMediaError(
                    "manifest_too_large",
                    f"The manifest is larger than {self.limits.max_manifest_bytes} bytes.",
                    details={"max_bytes": self.limits.max_manifest_bytes},
                ) from error
            raise
        return data.decode("utf-8", errors="replace")

    # fetching ---------------------------------------------------------------------

    def progressive(self, fmt: MediaFormat) -> Iterator[bytes]:
        """A progressive file's body, streamed (retried only before its first byte)."""
        attempt = 0
        while True:
            try:
                with self.fetcher.stream(fmt.url, max_bytes=2**40, headers=fmt.forwarded_headers()) as response:
                    yield from response.iter_bytes()
                    return
            except TransientMediaError:
                attempt += 1
                if attempt > self.limits.segment_retries:
                    raise
                self._sleep(self.limits.retry_backoff_seconds * attempt)  # type: ignore[operator]

    def segments(self, plan: SegmentPlan, fmt: MediaFormat) -> Iterator[bytes]:
        """The init segment and every media segment, in order, each fetched whole (bounded) with retries."""
        keys: dict[str, bytes] = {}
        for segment in ((plan.init,) if plan.init else ()) + plan.segments:
            data = self.segment(segment, fmt)
            if segment.key_url:
                data = _decrypt(data, self._key(segment.key_url, fmt, keys), segment.key_iv or b"\0" * 16)
            yield data

    def segment(self, segment: Segment, fmt: MediaFormat) -> bytes:
        """One segment's bytes; a transient failure is retried `segment_retries` times with backoff."""
        headers = {**fmt.forwarded_headers(), **segment.headers()}
        attempt = 0
        while True:
            try:
                return self.fetcher.get_bytes(segment.url, max_bytes=self.limits.max_segment_bytes, headers=headers)
            except TransientMediaError as error:
                attempt += 1
                if attempt > self.limits.segment_retries:
                    raise TransientMediaError(
                        "segment_unavailable",
                        f"A segment kept failing ({error.code}) after {self.limits.segment_retries} retries.",
                        details={"last_error": error.code, "sequence": segment.sequence},
                    ) from error
                self._sleep(self.limits.retry_backoff_seconds * attempt)  # type: ignore[operator]

    def _key(self, url: str, fmt: MediaFormat, keys: dict[str, bytes]) -> bytes:
        if url not in keys:
            key = self.fetcher.get_bytes(url, max_bytes=64, headers=fmt.forwarded_headers())
            if len(key) != 16:
                raise PermanentMediaError("unsupported_content", "An HLS AES-128 key is not 16 bytes long.")
            keys[url] = key
        return keys[url]


def _wanted_representation(fmt: MediaFormat) -> WantedRepresentation:
    """What a DASH format says of its representation: the id, and the traits to find it by when ids differ."""
    return WantedRepresentation(
        stream_id=fmt.stream_id,
        kind="video" if fmt.has_video else "audio",
        height=fmt.height,
        width=fmt.width,
        bitrate=fmt.bitrate,
        codec=fmt.vcodec if fmt.has_video else fmt.acodec,
        language=fmt.language,
    )


def _decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-128-CBC with PKCS#7 padding, as HLS encrypts whole segments (pycryptodome)."""
    try:
        return unpad(AES.new(key, AES.MODE_CBC, iv).decrypt(data), 16)
    except ValueError as error:
        raise PermanentMediaError("unsupported_content", "An HLS segment does not decrypt with its key.") from error


def _expected_bytes(plans: dict[str, SegmentPlan | None], choice: FormatChoice, duration: float | None) -> int | None:
    total = 0
    for fmt in choice.sources():
        if fmt.filesize:
            total += fmt.filesize
        elif fmt.bitrate and duration:
            total += int(fmt.bitrate * 125 * duration)
        else:
            return None
    return total or None
