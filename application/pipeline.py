"""The worker pipeline: one attempt of a task, every phase recorded as an event.

Downloading (10) → metadata (20: cache, then provider) → video or audio (30…60 while streaming, 70
stored) → subtitles (80) → upload/finalize (90) → Extracted (100) or Failed.

Which formats are stored is decided by application/format_choice.py. One progressive file holding
everything wanted streams straight into the blob store; anything else (split files, HLS, DASH,
audio-only, muted) goes through the `MediaAssembler` port, which fetches and remuxes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from opentelemetry import metrics, propagate, trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from application.format_choice import FormatChoice, FormatRequest, choose_formats
from application.mediatasks import MediaTasks
from application.ports.blob_store import BlobRef, BlobStore
from application.ports.errors import MediaError, PermanentMediaError, TransientMediaError
from application.ports.media_assembler import MediaAssembler
from application.ports.media_fetcher import MediaFetcher
from application.ports.media_provider import (
    MediaFormat,
    MediaInfo,
    MediaProvider,
    SubtitleSource,
    VideoSource,
    is_subtitle_language,
)
from application.ports.metadata_cache import MetadataCache
from domain.errors import InvalidTransition, StaleAttempt
from domain.platforms import normalize_media_url
from domain.subtitles import SubtitleTrack
from domain.tasks import MediaTask
from domain.text import clean_json, clean_text
from domain.vocabulary import AttemptOutcome, OutputType

logger = logging.getLogger(__name__)
tracer = trace.get_tracer(__name__)
meter = metrics.get_meter(__name__)

SubtitleParser = Callable[..., SubtitleTrack]
VIDEO_TYPES = ("video/", "application/octet-stream", "binary/octet-stream", "application/mp4")
MAX_SUBTITLE_TRACKS = 8
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


class PipelineMetrics:
    """The pipeline's instruments (OpenTelemetry API; the process chooses where they are exported)."""

    phase_duration = meter.create_histogram(
        "mediatasks.phase.duration",
        unit="s",
        description="Duration of one phase of an attempt, by phase",
        explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
    )
    task_duration = meter.create_histogram(
        "mediatasks.task.duration",
        unit="s",
        description="Duration of an attempt run to its end, by outcome",
        explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
    )
    tasks = meter.create_counter(
        "mediatasks.tasks",
        unit="{attempt}",
        description="Attempts run to an end, by outcome (extracted, failed, retry_scheduled, lease_lost) and error code",
    )
    deliveries = meter.create_counter(
        "mediatasks.deliveries", unit="{delivery}", description="Deliveries of a task to the pipeline, by outcome"
    )
    active_attempts = meter.create_up_down_counter(
        "mediatasks.attempts.active", unit="{attempt}", description="Attempts running now in this process"
    )
    downloaded_bytes = meter.create_counter(
        "mediatasks.download.bytes", unit="By", description="Video bytes streamed into the blob store"
    )


@contextmanager
def phase(name: str, **attributes: Any) -> Iterator[Span]:
    """A child span and a duration sample for one phase; errors are recorded by code, never by message."""
    started = time.perf_counter()
    with tracer.start_as_current_span(
        name, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as e:
            code = e.code if isinstance(e, MediaError) else type(e).__name__
            span.set_attribute("error.type", code)
            span.set_status(Status(StatusCode.ERROR, code))
            raise
        finally:
            PipelineMetrics.phase_duration.record(time.perf_counter() - started, {"phase": name})


@dataclass(frozen=True)
class PipelineLimits:
    max_video_bytes: int = 2 * 1024**3
    max_subtitle_bytes: int = 4 * 1024**2
    metadata_ttl_seconds: float = 900
    heartbeat_seconds: float = 60
    #: Progress events while streaming come every 5 points, but no closer together than this: each is a
    #: commit, a notification and a read-model update, CPU the download shares (docs/performance.md).
    progress_interval_seconds: float = 0.5
    max_post_items: int = 20
    max_duration_seconds: float = 4 * 3600


@dataclass(frozen=True)
class PipelineOutcome:
    """What one delivery of a task came to (the queue's answer is derived from it)."""

    outcome: AttemptOutcome
    attempt: int
    error_code: str | None = None
    retryable: bool = False
    terminal: bool = False
    retry_after: float | None = None
    lease_remaining: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


class AttemptReporter:
    """Reports progress for one attempt: every stage, and heartbeats while a phase runs long."""

    def __init__(
        self, app: MediaTasks, task_id: UUID, attempt: int, heartbeat_seconds: float, progress_interval_seconds: float
    ) -> None:
        self.app, self.task_id, self.attempt = app, task_id, attempt
        self.heartbeat_seconds = heartbeat_seconds
        self.progress_interval_seconds = progress_interval_seconds
        self.progress = 10
        self.last_report = time.monotonic()

    def stage(self, stage: str, progress: int, details: dict[str, Any] | None = None) -> None:
        self.progress = max(self.progress, progress)
        with phase("event_store.append", **{"mediatasks.event": "Processing", "mediatasks.stage": stage}):
            self.app.report_progress(self.task_id, self.attempt, stage, self.progress, details)
        self.last_report = time.monotonic()
        logger.info(
            "task progress",
            extra={
                "task_id": str(self.task_id),
                "attempt": self.attempt,
                "phase": stage,
                "progress": self.progress,
                **({"timings": details["timings"]} if details and "timings" in details else {}),
            },
        )

    def tick(self, stage: str, progress: int, details: dict[str, Any] | None = None) -> None:
        """Report if progress moved by 5 or more and the last report is `progress_interval_seconds` old,
        or a heartbeat is due (the lease runs from the last event)."""
        since = time.monotonic() - self.last_report
        moved = progress >= self.progress + 5 and since >= self.progress_interval_seconds
        if moved or since >= self.heartbeat_seconds:
            self.stage(stage, progress, details)


class TaskPipeline:
    """Runs attempts of tasks against the ports; all state goes into MediaTasks' events."""

    def __init__(
        self,
        app: MediaTasks,
        *,
        provider: MediaProvider,
        fetcher: MediaFetcher,
        blobs: BlobStore,
        cache: MetadataCache,
        parse_subtitles: SubtitleParser,
        limits: PipelineLimits,
        worker_id: str,
        assembler: MediaAssembler | None = None,
    ) -> None:
        """`assembler` fetches and remuxes what is not one progressive file (HLS, DASH, split, audio)."""
        self.app, self.provider, self.fetcher, self.blobs, self.cache = app, provider, fetcher, blobs, cache
        self.assembler = assembler
        self.parse_subtitles = parse_subtitles
        self.limits = limits
        self.worker_id = worker_id

    def run(
        self, task_id: UUID, delivery: dict[str, Any] | None = None, *, last_delivery: bool = False
    ) -> PipelineOutcome:
        """One delivery: a `task.process` span linked to the submission's trace, and its metrics.

        `last_delivery`: the queue will not deliver this task again, so a transient failure of the
        attempt is recorded as terminal (`retries_exhausted`, refunded) instead of awaiting a retry.
        """
        with tracer.start_as_current_span(
            "task.process",
            kind=SpanKind.CONSUMER,
            record_exception=False,
            attributes={"mediatasks.task_id": str(task_id)},
        ) as span:
            outcome = self._deliver(task_id, delivery, span, last_delivery)
            span.set_attribute("mediatasks.outcome", outcome.outcome)
            span.set_attribute("mediatasks.attempt", outcome.attempt)
            if outcome.error_code:
                span.set_attribute("mediatasks.error_code", outcome.error_code)
                span.set_attribute("error.type", outcome.error_code)
                span.set_status(Status(StatusCode.ERROR, outcome.error_code))
        PipelineMetrics.deliveries.add(1, {"outcome": outcome.outcome})
        return outcome

    def _deliver(
        self, task_id: UUID, delivery: dict[str, Any] | None, span: Span, last_delivery: bool
    ) -> PipelineOutcome:
        with phase("event_store.append", **{"mediatasks.event": "Downloading"}):
            decision = self.app.begin_attempt(task_id, self.worker_id, delivery)
        if decision.outcome not in (AttemptOutcome.STARTED, AttemptOutcome.RETRYING) or decision.task is None:
            return PipelineOutcome(decision.outcome, decision.attempt, lease_remaining=decision.lease_remaining)
        task = decision.task
        submission = trace.get_current_span(propagate.extract(task.trace_context or {})).get_span_context()
        if submission.is_valid:
            span.add_link(submission, {"mediatasks.link": "submission"})
        span.set_attributes(
            {
                "mediatasks.attempt": decision.attempt,
                "mediatasks.platform": task.platform,
                "mediatasks.output_type": task.output_type,
            }
        )
        started = time.perf_counter()
        PipelineMetrics.active_attempts.add(1)
        try:
            outcome = self._attempt(task, decision.attempt, last_delivery)
        finally:
            PipelineMetrics.active_attempts.add(-1)
        attributes = {
            "outcome": outcome.outcome,
            "output_type": task.output_type,
            **({"error_code": outcome.error_code} if outcome.error_code else {}),
        }
        PipelineMetrics.tasks.add(1, attributes)
        PipelineMetrics.task_duration.record(time.perf_counter() - started, attributes)
        return outcome

    def _attempt(self, task: MediaTask, attempt: int, last_delivery: bool) -> PipelineOutcome:
        task_id = task.id
        reporter = AttemptReporter(
            self.app, task_id, attempt, self.limits.heartbeat_seconds, self.limits.progress_interval_seconds
        )
        timings: dict[str, float] = {}
        stored: list[BlobRef] = []
        started = time.perf_counter()
        cache_key = normalize_media_url(task.url)
        cache_hit = False
        try:
            info, cache_hit = self._metadata(task, cache_key, timings)
            reporter.stage(
                "metadata",
                20,
                {
                    "cache": "hit" if cache_hit else "miss",
                    "title": info.title,
                    "timings": dict(timings),
                    "media": _media_summary(info),
                },
            )
            result: dict[str, Any] = {"media": _media_summary(info)}
            if OutputType(task.output_type).has_media:
                result.update(self._media(task, info, attempt, reporter, timings, stored))
            if OutputType(task.output_type).has_subtitles:
                tracks = self._subtitles(task, info, attempt, reporter, timings, stored)
                result["subtitles"] = tracks
            reporter.stage("upload", 90, {"timings": dict(timings)})
            timings["total_ms"] = _ms(started)
            result["timings"] = timings
            with phase("event_store.append", **{"mediatasks.event": "Extracted"}):
                self.app.complete(task_id, attempt, result)
            logger.info(
                "task extracted",
                extra={
                    "task_id": str(task_id),
                    "attempt": attempt,
                    "outcome": AttemptOutcome.EXTRACTED,
                    "timings": timings,
                },
            )
            return PipelineOutcome(AttemptOutcome.EXTRACTED, attempt, timings=timings)
        except (StaleAttempt, InvalidTransition):
            logger.warning("attempt lost its lease", extra={"task_id": str(task_id), "attempt": attempt})
            self._discard(stored)
            return PipelineOutcome(AttemptOutcome.LEASE_LOST, attempt)
        except MediaError as e:
            self._discard(stored)
            if cache_hit:
                self.cache.invalidate(cache_key)
            return self._fail(task, attempt, e, timings, started, last_delivery)
        except Exception as e:  # noqa: BLE001 - an unexpected fault must not lose the attempt
            logger.exception("unexpected error in the pipeline", extra={"task_id": str(task_id), "attempt": attempt})
            self._discard(stored)
            return self._fail(
                task,
                attempt,
                TransientMediaError("internal_error", f"Unexpected error: {type(e).__name__}"),
                timings,
                started,
                last_delivery,
            )

    # Phases -----------------------------------------------------------------------

    def _metadata(self, task: MediaTask, cache_key: str, timings: dict[str, float]) -> tuple[MediaInfo, bool]:
        t = time.perf_counter()
        with phase("metadata.cache_lookup") as span:
            cached = self.cache.get(cache_key)
            span.set_attribute("mediatasks.cache_hit", cached is not None)
        timings["cache_lookup_ms"] = _ms(t)
        if cached is not None:
            return _cleaned(MediaInfo.from_dict(cached), task), True
        t = time.perf_counter()
        with phase("provider.fetch", **{"mediatasks.platform": task.platform}):
            info = _cleaned(self.provider.fetch_metadata(task.url), task)
        timings["provider_ms"] = _ms(t)
        self.cache.put(cache_key, info.to_dict(), self.limits.metadata_ttl_seconds)
        return info, False

    def _media(
        self,
        task: MediaTask,
        info: MediaInfo,
        attempt: int,
        reporter: AttemptReporter,
        timings: dict[str, float],
        stored: list[BlobRef],
    ) -> dict[str, Any]:
        """Choose, fetch and store the video (or audio) of every item of the post; the result's entries."""
        if info.is_live:
            raise PermanentMediaError(
                "live_not_supported", "This is a live stream; only finished videos can be stored."
            )
        if info.drm:
            raise PermanentMediaError("drm_protected", "This video is DRM-protected and cannot be stored.")
        if info.duration and info.duration > self.limits.max_duration_seconds:
            raise PermanentMediaError(
                "too_long",
                f"The video lasts {info.duration:.0f} s; the limit is {self.limits.max_duration_seconds:.0f} s.",
                details={"duration": info.duration, "max_duration": self.limits.max_duration_seconds},
            )
        request = FormatRequest(
            output="audio" if task.output_type == OutputType.AUDIO else "video", **getattr(task, "options", None) or {}
        )
        kind = "audio" if request.output == "audio" else "video"
        items = list(info.items[: self.limits.max_post_items]) or [info]
        entries = []
        for index, item in enumerate(items):
            suffix = f"-{index}" if len(items) > 1 else ""
            formats = item.playable_formats()
            if not formats:
                raise PermanentMediaError("no_video", "This post has no video to download.")
            choice = choose_formats(formats, request)
            if choice.is_passthrough and choice.video is not None:
                ref = self._video(task, _video_source(item, choice.video), attempt, reporter, timings, suffix)
                duration = item.duration
            else:
                ref, duration = self._assembled(task, choice, kind, attempt, reporter, timings, suffix)
            stored.append(ref)
            entries.append({kind: ref.to_dict(), "formats": {**choice.summary(), "duration": duration}})
        result: dict[str, Any] = dict(entries[0])
        if len(items) > 1:
            result["items"] = entries
        return result

    def _assembled(
        self,
        task: MediaTask,
        choice: FormatChoice,
        kind: str,
        attempt: int,
        reporter: AttemptReporter,
        timings: dict[str, float],
        suffix: str,
    ) -> tuple[BlobRef, float | None]:
        if self.assembler is None:
            raise PermanentMediaError("no_suitable_format", "This service stores single progressive files only.")
        reporter.stage(kind, max(reporter.progress, 30))
        t = time.perf_counter()
        folder = "audio" if kind == "audio" else "videos"
        with (
            phase(f"{kind}.assemble", **{"mediatasks.container": choice.container}) as span,
            self.assembler.assemble(choice, max_bytes=self.limits.max_video_bytes) as media,
        ):
            key = f"{folder}/{task.id}/{attempt}{suffix}{media.extension}"

            def chunks() -> Iterator[bytes]:
                for chunk in media.iter_bytes():
                    expected = media.expected_fetch_bytes
                    fetched = media.bytes_fetched
                    progress = 30 + int(30 * min(fetched / expected, 1)) if expected else reporter.progress
                    reporter.tick(kind, progress, {"bytes_fetched": fetched})
                    yield chunk

            with phase("blob.upload", **{"mediatasks.content_type": media.content_type}) as upload:
                ref = self.blobs.put_stream(
                    key, chunks(), content_type=media.content_type, max_bytes=self.limits.max_video_bytes
                )
                upload.set_attribute("mediatasks.bytes", ref.size)
            span.set_attribute("mediatasks.bytes", ref.size)
            PipelineMetrics.downloaded_bytes.add(media.bytes_fetched)
            fetched, duration = media.bytes_fetched, media.duration
        seconds = time.perf_counter() - t
        timings["download_ms"] = round(seconds * 1000, 1)
        timings["download_bytes"] = fetched
        timings["stored_bytes"] = ref.size
        timings["download_mb_per_s"] = round(fetched / 1e6 / seconds, 1) if seconds > 0 else 0.0
        reporter.stage(kind, 70, {"timings": dict(timings), "bytes": ref.size})
        return ref, duration

    def _video(
        self,
        task: MediaTask,
        source: VideoSource,
        attempt: int,
        reporter: AttemptReporter,
        timings: dict[str, float],
        suffix: str = "",
    ) -> BlobRef:
        if source.size and source.size > self.limits.max_video_bytes:
            raise PermanentMediaError(
                "too_large", f"The video is {source.size} bytes; the limit is {self.limits.max_video_bytes}."
            )
        reporter.stage("video", 30)
        t = time.perf_counter()
        with (
            phase("video.download") as span,
            self.fetcher.stream(
                source.url, max_bytes=self.limits.max_video_bytes, headers=source.forwarded_headers()
            ) as response,
        ):
            content_type = (response.headers.get("content-type") or source.mime_type or "").split(";")[0].strip()
            if not content_type.lower().startswith(VIDEO_TYPES):
                raise PermanentMediaError("unsupported_content", f"Expected a video, got {content_type or 'no type'}.")
            expected = source.size or _int(response.headers.get("content-length"))
            key = f"videos/{task.id}/{attempt}{suffix}{_extension(content_type)}"
            with phase("blob.upload", **{"mediatasks.content_type": content_type}) as upload:
                ref = self.blobs.put_stream(
                    key,
                    self._counted(response.iter_bytes(), expected, reporter, timings),
                    content_type=content_type,
                    max_bytes=self.limits.max_video_bytes,
                )
                upload.set_attribute("mediatasks.bytes", ref.size)
            span.set_attribute("mediatasks.bytes", ref.size)
            PipelineMetrics.downloaded_bytes.add(ref.size)
        seconds = time.perf_counter() - t
        timings["download_ms"] = round(seconds * 1000, 1)
        timings["download_bytes"] = ref.size
        timings["download_mb_per_s"] = round(ref.size / 1e6 / seconds, 1) if seconds > 0 else 0.0
        reporter.stage("video", 70, {"timings": dict(timings), "bytes": ref.size})
        return ref

    def _counted(
        self, chunks: Iterator[bytes], expected: int | None, reporter: AttemptReporter, timings: dict[str, float]
    ) -> Iterator[bytes]:
        received = 0
        for chunk in chunks:
            received += len(chunk)
            progress = 30 + int(30 * min(received / expected, 1)) if expected else reporter.progress
            reporter.tick("video", progress, {"bytes": received})
            yield chunk
        timings["download_bytes"] = received

    def _subtitles(
        self,
        task: MediaTask,
        info: MediaInfo,
        attempt: int,
        reporter: AttemptReporter,
        timings: dict[str, float],
        stored: list[BlobRef],
    ) -> list[dict[str, Any]]:
        sources = _choose_tracks(info, task.languages)
        if not sources:
            wanted = ", ".join(task.languages) if task.languages else "any language"
            raise PermanentMediaError("no_subtitles", f"No subtitles in {wanted} for this video.")
        reporter.stage("subtitles", max(reporter.progress, 75))
        t = time.perf_counter()
        tracks: list[dict[str, Any]] = []
        with phase("subtitles.extract", **{"mediatasks.tracks_wanted": len(sources)}) as span:
            for source in sources:
                data = self.fetcher.get_bytes(source.url, max_bytes=self.limits.max_subtitle_bytes)
                track = self.parse_subtitles(data, lang=source.lang, kind=source.kind, fmt=source.format)
                if not track.cues:
                    continue
                cues = [{"start": c.start, "end": c.end, "text": c.text} for c in track.cues]
                payload = json.dumps(cues, ensure_ascii=False).encode()
                with phase(
                    "blob.upload", **{"mediatasks.content_type": "application/json", "mediatasks.bytes": len(payload)}
                ):
                    ref = self.blobs.put_stream(
                        f"subtitles/{task.id}/{attempt}/{source.lang}.json", [payload], content_type="application/json"
                    )
                stored.append(ref)
                tracks.append(
                    {
                        "lang": source.lang,
                        "kind": source.kind,
                        "source_format": source.format,
                        "cues": len(cues),
                        "blob": ref.to_dict(),
                    }
                )
                reporter.tick("subtitles", 80)
            span.set_attribute("mediatasks.tracks", len(tracks))
        timings["subtitles_ms"] = _ms(t)
        if not tracks:
            raise PermanentMediaError("no_subtitles", "The subtitle tracks of this video are empty.")
        reporter.stage("subtitles", 80, {"timings": dict(timings), "tracks": len(tracks)})
        return tracks

    # Failure ----------------------------------------------------------------------

    def _fail(
        self,
        task: MediaTask,
        attempt: int,
        error: MediaError,
        timings: dict[str, float],
        started: float,
        last_delivery: bool,
    ) -> PipelineOutcome:
        timings["total_ms"] = _ms(started)
        details = dict(error.details)
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            details["retry_after"] = retry_after
        # Messages and details may quote a provider or a file: cleaned before they enter an event.
        context = clean_json({"timings": timings, **({"details": details} if details else {})})
        try:
            with phase("event_store.append", **{"mediatasks.event": "Failed", "mediatasks.error_code": error.code}):
                terminal = self.app.fail(
                    task.id,
                    attempt,
                    clean_text(error.code),
                    clean_text(error.message),
                    error.retryable,
                    context,
                    last_delivery=last_delivery,
                )
        except (StaleAttempt, InvalidTransition):
            return PipelineOutcome(AttemptOutcome.LEASE_LOST, attempt, error.code, error.retryable)
        logger.info(
            "attempt failed",
            extra={
                "task_id": str(task.id),
                "attempt": attempt,
                "error_code": error.code,
                "outcome": AttemptOutcome.FAILED if terminal else AttemptOutcome.RETRY_SCHEDULED,
                "terminal": terminal,
                "timings": timings,
            },
        )
        return PipelineOutcome(
            AttemptOutcome.FAILED if terminal else AttemptOutcome.RETRY_SCHEDULED,
            attempt,
            error.code,
            error.retryable,
            terminal,
            retry_after,
            timings=timings,
        )

    def _discard(self, stored: list[BlobRef]) -> None:
        for ref in stored:
            try:
                self.blobs.delete(ref.key)
            except Exception:  # noqa: BLE001 - cleanup is best effort
                logger.warning("could not delete %s", ref.key)


def _cleaned(info: MediaInfo, task: MediaTask) -> MediaInfo:
    """Provider metadata fit for events and the cache (MediaInfo.cleaned); skipped tracks are logged."""
    cleaned = info.cleaned()
    skipped = [track.lang for track in info.subtitles if not is_subtitle_language(clean_text(track.lang))]
    if skipped:
        logger.warning(
            "subtitle tracks skipped: their language is not a language tag",
            extra={"task_id": str(task.id), "languages": [repr(lang[:40]) for lang in skipped]},
        )
    return cleaned


def _choose_tracks(info: MediaInfo, languages: list[str]) -> list[SubtitleSource]:
    if languages:
        chosen = [info.subtitles_for(lang)[0] for lang in languages if info.subtitles_for(lang)]
    else:
        manual = [t for t in info.subtitles if t.kind == "manual"]
        chosen = manual or list(info.subtitles[:1])
    unique: dict[str, SubtitleSource] = {}
    for track in chosen:
        unique.setdefault(track.lang, track)
    return list(unique.values())[:MAX_SUBTITLE_TRACKS]


def _video_source(info: MediaInfo, fmt: MediaFormat) -> VideoSource:
    """The progressive file to stream as it is: the provider's `video`, or the chosen format."""
    if fmt.format_id == "video" and info.video is not None and not info.formats:
        return info.video
    mime = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime"}.get((fmt.ext or "").lower())
    return VideoSource(fmt.url, fmt.filesize, mime, dict(fmt.headers))


def _media_summary(info: MediaInfo) -> dict[str, Any]:
    """What the events keep of the metadata: never the (possibly signed) media URLs."""
    return {
        "platform": info.platform,
        "media_id": info.media_id,
        "title": info.title,
        "duration": info.duration,
        "uploader": info.uploader,
        "has_video": info.video is not None or any(f.has_video for f in info.formats),
        "formats": len(info.formats),
        "items": len(info.items) or 1,
        "subtitle_languages": sorted({t.lang for t in info.subtitles}),
    }


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 1)


def _int(value: str | None) -> int | None:
    return int(value) if value and value.isdigit() else None


def _extension(content_type: str) -> str:
    return {"video/mp4": ".mp4", "video/webm": ".webm", "video/quicktime": ".mov"}.get(content_type.lower(), "")
