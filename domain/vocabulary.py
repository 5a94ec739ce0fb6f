"""The service's words, one StrEnum per vocabulary. Members are their wire values (`str` subclasses),
so events, rows and JSON keep the same strings; two vocabularies may share a value ("retrying" is a
task status and an attempt outcome) and stay different words."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import ErrorCode

__all__ = [
    "ACTIVE_STATUSES",
    "OPEN_STATUSES",
    "WAITING_STATUSES",
    "AttemptOutcome",
    "ErrorCode",
    "OutputType",
    "TaskStatus",
]


class TaskStatus(StrEnum):
    """Where a task is in its lifecycle, as the read model and the API show it."""

    QUEUED = "queued"
    DOWNLOADING = "downloading"
    PROCESSING = "processing"
    RETRYING = "retrying"  # failed, not terminally: the next attempt is due
    EXTRACTED = "extracted"
    FAILED = "failed"


ACTIVE_STATUSES = (TaskStatus.DOWNLOADING, TaskStatus.PROCESSING)
OPEN_STATUSES = (TaskStatus.QUEUED, TaskStatus.DOWNLOADING, TaskStatus.PROCESSING, TaskStatus.RETRYING)
WAITING_STATUSES = (TaskStatus.QUEUED, TaskStatus.RETRYING)


class AttemptOutcome(StrEnum):
    """What a delivery of a task came to: `begin_attempt`'s decision, else how the attempt ended."""

    STARTED = "started"
    RETRYING = "retrying"  # a new attempt begins after a failed or abandoned one
    ALREADY_PROCESSING = "already_processing"
    ALREADY_COMPLETED = "already_completed"
    NOT_RETRYABLE = "not_retryable"
    EXTRACTED = "extracted"
    FAILED = "failed"
    RETRY_SCHEDULED = "retry_scheduled"
    LEASE_LOST = "lease_lost"


class OutputType(StrEnum):
    """What a submission asks for."""

    SUBTITLES = "subtitles"
    VIDEO = "video"
    VIDEO_AND_SUBTITLES = "video_and_subtitles"
    AUDIO = "audio"

    @property
    def has_video(self) -> bool:
        return self in (OutputType.VIDEO, OutputType.VIDEO_AND_SUBTITLES)

    @property
    def has_media(self) -> bool:
        """Whether the task stores a media file: the video, or for AUDIO the audio alone."""
        return self.has_video or self is OutputType.AUDIO

    @property
    def has_subtitles(self) -> bool:
        return self in (OutputType.SUBTITLES, OutputType.VIDEO_AND_SUBTITLES)
