"""The media task: one user's request to turn a link into subtitles and/or a stored video."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from domain.credits import NAMESPACE_IDS
from domain.errors import (
    AlreadyRefunded,
    ChargeNotFound,
    InvalidLanguages,
    InvalidOutputType,
    InvalidProgress,
    InvalidTransition,
    ProgressWentBackwards,
    StaleAttempt,
    TaskNotRetryable,
)
from domain.media_options import check_media_options
from domain.vocabulary import ACTIVE_STATUSES, AttemptOutcome, OutputType, TaskStatus

OUTPUT_TYPES = tuple(OutputType)
MAX_LANGUAGES = 10

QUEUED = TaskStatus.QUEUED
DOWNLOADING = TaskStatus.DOWNLOADING
PROCESSING = TaskStatus.PROCESSING
EXTRACTED = TaskStatus.EXTRACTED
FAILED = TaskStatus.FAILED
ACTIVE = ACTIVE_STATUSES

STARTED = AttemptOutcome.STARTED
RETRYING = AttemptOutcome.RETRYING  # the outcome of begin_attempt, not TaskStatus.RETRYING
ALREADY_PROCESSING = AttemptOutcome.ALREADY_PROCESSING
ALREADY_COMPLETED = AttemptOutcome.ALREADY_COMPLETED
NOT_RETRYABLE = AttemptOutcome.NOT_RETRYABLE

DOWNLOADING_PROGRESS = 10


def check_output_type(output_type: str) -> str:
    if output_type not in OUTPUT_TYPES:
        raise InvalidOutputType(f"output_type must be one of {', '.join(OUTPUT_TYPES)}.", output_type=output_type)
    return output_type


def check_languages(languages: list[str] | tuple[str, ...] | None) -> list[str]:
    languages = list(languages or [])
    if len(languages) > MAX_LANGUAGES:
        raise InvalidLanguages(f"At most {MAX_LANGUAGES} languages.", languages=languages)
    cleaned: list[str] = []
    for lang in languages:
        if not isinstance(lang, str) or not 2 <= len(lang) <= 16 or not lang.replace("-", "").isalnum():
            raise InvalidLanguages(f"{lang!r} is not a language code like 'en' or 'pt-BR'.")
        if lang not in cleaned:
            cleaned.append(lang)
    return cleaned


class MediaTask(Aggregate):
    """Lifecycle: queued → downloading → processing… → extracted | failed (→ retried → queued)."""

    @staticmethod
    def create_id(user_id: str, idempotency_key: str) -> UUID:
        return NAMESPACE_IDS(f"task:{user_id}:{idempotency_key}")

    id_for = create_id

    @classmethod
    def start(
        cls,
        *,
        user_id: str,
        idempotency_key: str,
        url: str,
        platform: str,
        output_type: str,
        languages: list[str] | None,
        credits: int,
        requested_at: datetime,
        max_attempts: int,
        trace_context: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> MediaTask:
        return cls(
            user_id=user_id,
            idempotency_key=idempotency_key,
            url=url,
            platform=platform,
            output_type=check_output_type(output_type),
            languages=check_languages(languages),
            credits=credits,
            requested_at=requested_at,
            max_attempts=max(1, max_attempts),
            trace_context=dict(trace_context or {}),
            options=check_media_options(options),
        )

    @event("Started")
    def __init__(
        self,
        user_id: str,
        idempotency_key: str,
        url: str,
        platform: str,
        output_type: str,
        languages: list[str],
        credits: int,
        requested_at: datetime,
        max_attempts: int,
        trace_context: dict[str, str],
        options: dict[str, Any] | None = None,
    ) -> None:
        self.user_id = user_id
        self.idempotency_key = idempotency_key
        self.url = url
        self.platform = platform
        self.output_type = output_type
        self.languages = languages
        self.credits = credits
        self.requested_at = requested_at
        self.max_attempts = max_attempts
        self.trace_context = trace_context
        self.options = options or check_media_options(None)
        self.status = QUEUED
        self.progress = 0
        self.attempt = 0
        self.charge_attempt = 1
        self.stage = ""
        self.worker_id = ""
        self.error: dict[str, Any] | None = None
        self.terminal_failure = False
        self.result: dict[str, Any] | None = None
        self.refunds_due: dict[int, int] = {}  # first attempt of a terminally failed paid run → its credits
        self.refunds_given: list[int] = []  # first attempts of the refunded runs (one per user retry at most)

    # Decisions ------------------------------------------------------------------

    def same_request(
        self, url: str, output_type: str, languages: list[str] | None, options: dict[str, Any] | None = None
    ) -> bool:
        return (self.url, self.output_type, self.languages, self.options) == (
            url,
            output_type,
            check_languages(languages),
            check_media_options(options),
        )

    @property
    def attempts_in_cycle(self) -> int:
        """Attempts made since the last payment (submission or user retry)."""
        return self.attempt - self.charge_attempt + 1

    def lease_remaining(self, now: datetime, lease: timedelta) -> float:
        """Seconds until the active attempt's lease runs out (0 if not active or expired)."""
        if self.status not in ACTIVE:
            return 0.0
        return max(0.0, (self.modified_on + lease - now).total_seconds())

    def begin_attempt(
        self, *, now: datetime, lease: timedelta, worker_id: str, delivery: dict[str, Any] | None = None
    ) -> AttemptOutcome:
        """Decide, from this task's history alone, whether a delivery may start an attempt."""
        if self.status == EXTRACTED:
            return ALREADY_COMPLETED
        if self.status == FAILED and self.terminal_failure:
            return NOT_RETRYABLE
        outcome = STARTED
        if self.status in ACTIVE:
            if self.lease_remaining(now, lease) > 0:
                return ALREADY_PROCESSING
            self._fail_attempt(
                code="lease_expired",
                message=f"Attempt {self.attempt} stopped reporting for {int(lease.total_seconds())} s.",
                retryable=True,
                context={"worker_id": self.worker_id, "stage": self.stage},
            )
            if self.terminal_failure:
                return NOT_RETRYABLE
            outcome = RETRYING
        elif self.status == FAILED:
            outcome = RETRYING
        self._attempt_began(
            attempt=self.attempt + 1,
            worker_id=worker_id,
            progress=DOWNLOADING_PROGRESS,
            delivery=dict(delivery or {}),
        )
        return outcome

    def report_progress(
        self, *, attempt: int, stage: str, progress: int, details: dict[str, Any] | None = None
    ) -> None:
        self._check_active_attempt(attempt)
        if not isinstance(progress, int) or not 0 <= progress < 100:
            raise InvalidProgress(
                "Progress is a whole number from 0 to 99 until the task completes.", progress=progress
            )
        if progress < self.progress:
            raise ProgressWentBackwards(
                f"Progress may not go back from {self.progress} to {progress}.",
                current=self.progress,
                reported=progress,
            )
        self._processed(attempt=attempt, stage=stage, progress=progress, details=dict(details or {}))

    def complete(self, *, attempt: int, result: dict[str, Any]) -> None:
        self._check_active_attempt(attempt)
        self._extracted(attempt=attempt, result=result, progress=100)

    def fail(
        self,
        *,
        attempt: int,
        code: str,
        message: str,
        retryable: bool,
        context: dict[str, Any] | None = None,
        last_delivery: bool = False,
    ) -> bool:
        """Record a failed attempt; returns True when it is terminal (a refund follows).

        `last_delivery`: the queue will not deliver this task again, so a retryable failure is
        terminal too (`retries_exhausted`).
        """
        self._check_active_attempt(attempt)
        self._fail_attempt(
            code=code, message=message, retryable=retryable, context=context or {}, last_delivery=last_delivery
        )
        return self.terminal_failure

    def retry(self, *, credits: int, requested_at: datetime) -> int:
        """A user's retry of a terminally failed task; returns the attempt the new charge pays for."""
        if self.status != FAILED or not self.terminal_failure:
            raise TaskNotRetryable(f"Only a failed task can be retried; this one is {self.status}.", status=self.status)
        first_attempt = self.attempt + 1
        self._retried(first_attempt=first_attempt, credits=credits, requested_at=requested_at)
        return first_attempt

    def refund(self, first_attempt: int) -> int:
        """Release the charge of the terminally failed paid run that began at `first_attempt`; returns its credits.

        Saved in one transaction with the account's refund: a second refund of the run, or a refund
        of a run that did not fail terminally (an extracted task), is refused here, and a rival
        refund conflicts on the task's version.
        """
        if first_attempt not in self.refunds_due:
            if first_attempt in self.refunds_given:
                raise AlreadyRefunded("This run was refunded already.", task_id=str(self.id), attempt=first_attempt)
            raise ChargeNotFound(
                "No terminally failed run of this task began at this attempt.",
                task_id=str(self.id),
                attempt=first_attempt,
            )
        credits = self.refunds_due[first_attempt]
        self._refunded(first_attempt=first_attempt, credits=credits)
        return credits

    def _check_active_attempt(self, attempt: int) -> None:
        if self.status not in ACTIVE:
            raise InvalidTransition(
                f"The task is {self.status}, not being worked on.", status=self.status, attempt=attempt
            )
        if attempt != self.attempt:
            raise StaleAttempt(
                f"Attempt {attempt} no longer holds this task (attempt {self.attempt} does).",
                attempt=attempt,
                current_attempt=self.attempt,
            )

    def _fail_attempt(
        self, *, code: str, message: str, retryable: bool, context: dict[str, Any], last_delivery: bool = False
    ) -> None:
        terminal = not retryable or last_delivery or self.attempts_in_cycle >= self.max_attempts
        if retryable and terminal:
            context = {**context, "last_error": code, "attempts": self.attempts_in_cycle}
            code = "retries_exhausted"
            message = f"Gave up after {self.attempts_in_cycle} attempts: {message}"
        self._failed(
            attempt=self.attempt,
            code=code,
            message=message,
            retryable=retryable,
            terminal=terminal,
            context={"url": self.url, "output_type": self.output_type, "stage": self.stage, **context},
        )

    # Recordings (no checks, no clock, no uuid: these run again at every replay) ----

    @event("Downloading")
    def _attempt_began(self, attempt: int, worker_id: str, progress: int, delivery: dict[str, Any]) -> None:
        self.status = DOWNLOADING
        self.attempt = attempt
        self.worker_id = worker_id
        self.progress = progress
        self.stage = "download"
        self.error = None
        self.terminal_failure = False

    @event("Processing")
    def _processed(self, attempt: int, stage: str, progress: int, details: dict[str, Any]) -> None:
        self.status = PROCESSING
        self.stage = stage
        self.progress = progress

    @event("Extracted")
    def _extracted(self, attempt: int, result: dict[str, Any], progress: int) -> None:
        self.status = EXTRACTED
        self.progress = progress
        self.result = result

    @event("Failed")
    def _failed(
        self, attempt: int, code: str, message: str, retryable: bool, terminal: bool, context: dict[str, Any]
    ) -> None:
        self.status = FAILED
        self.error = {"code": code, "message": message, "retryable": retryable, "attempt": attempt}
        self.terminal_failure = terminal
        if terminal:
            self.refunds_due[self.charge_attempt] = self.credits

    @event("Retried")
    def _retried(self, first_attempt: int, credits: int, requested_at: datetime) -> None:
        self.status = QUEUED
        self.progress = 0
        self.charge_attempt = first_attempt
        self.credits = credits
        self.error = None
        self.terminal_failure = False
        self.result = None

    @event("Refunded")
    def _refunded(self, first_attempt: int, credits: int) -> None:
        self.refunds_due.pop(first_attempt, None)
        self.refunds_given.append(first_attempt)
