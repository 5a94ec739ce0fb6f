"""The outbox to QStash: every new attempt of a task in the event log becomes one published message.

- `QStashPublisher` follows `Started` and `Retried` from a tracked position (a tracking table like a
  projection's) and publishes attempt 1, or the retry's first attempt. The position moves past an
  event only after QStash answered 2xx; until then the same attempt is published again after a
  backoff. Publishing is therefore at least once, and the deduplication id `<task_id>-<attempt>`
  makes a repeat harmless. It runs under the process's Supervisor (infrastructure/supervision.py):
  after a database error it follows again from the tracked position.
- `TakeoverSweeper` publishes the next attempt of tasks whose lease ran out (their worker died) or
  whose delivery was missed (QStash gave up on them): `begin_attempt` decides from history.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

from eventsourcing.persistence import IntegrityError, Tracking, TrackingRecorder
from eventsourcing.utils import get_topic

from domain.tasks import MediaTask
from infrastructure.delivery.inline_dispatcher import Sweeper, overdue_tasks, retry_delay, unseen_dispatches
from infrastructure.delivery.qstash_client import PublishError, PublishRejected, PublishUnavailable
from infrastructure.postgres.tables import PUBLISHER_TRACKING_TABLE
from infrastructure.supervision import Supervised, Supervisor, subscription_stopped_by

logger = logging.getLogger(__name__)

PUBLISHER_NAME = "QStashPublisher"
TRACKING_TABLE = PUBLISHER_TRACKING_TABLE
PUBLISH_TOPICS = tuple(get_topic(c) for c in (MediaTask.Started, MediaTask.Retried))
MESSAGE_REMEMBERED_SECONDS = 600.0  # QStash's deduplication window: republishing sooner does nothing


@dataclass(frozen=True)
class PublisherStatus:
    """What /readyz shows: the tracked position, and since when publishing fails (monotonic seconds)."""

    position: int
    published: int
    consecutive_failures: int
    failing_since: float | None
    last_error: str | None

    def failing_for(self, now: float | None = None) -> float:
        """Seconds publishing has failed without a success in between (0 when it works)."""
        if self.failing_since is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.failing_since


def first_attempt_of(event: Any) -> int:
    """The attempt a Started or Retried event asks for."""
    return event.first_attempt if isinstance(event, MediaTask.Retried) else 1


class QStashPublisher:
    """Follows the event log and publishes each new attempt to QStash, at least once."""

    name = "qstash-publisher"

    def __init__(
        self,
        app: Any,
        tracking: TrackingRecorder,
        client: Any,
        *,
        backoff_base_seconds: float = 0.5,
        backoff_cap_seconds: float = 30.0,
    ) -> None:
        self.app, self.tracking, self.client = app, tracking, client
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._lock = threading.Lock()
        self._supervised = Supervised()
        self._position = 0
        self._published = 0
        self._failures = 0
        self._failing_since: float | None = None
        self._last_error: str | None = None

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Follow under `supervisor` (else under a supervisor of its own)."""
        self._supervised.start(
            supervisor,
            self,
            backoff_base_seconds=self.backoff_base_seconds,
            backoff_cap_seconds=self.backoff_cap_seconds,
        )

    def stop(self) -> None:
        self._supervised.stop()

    def position(self) -> int | None:
        with self._lock:
            return self._position

    def status(self) -> PublisherStatus:
        with self._lock:
            return PublisherStatus(
                self._position, self._published, self._failures, self._failing_since, self._last_error
            )

    def publish(self, task_id: UUID, attempt: int) -> bool:
        """Publish one attempt once; False (logged, counted in the status) if QStash did not take it."""
        return self._try_publish(task_id, attempt) is None

    def _try_publish(self, task_id: UUID, attempt: int) -> PublishError | None:
        try:
            self.client.publish(str(task_id), attempt)
        except PublishError as error:
            self._failed(error, task_id, attempt)
            return error
        with self._lock:
            self._published += 1
            self._failures, self._failing_since, self._last_error = 0, None, None
        return None

    # Following the log ----------------------------------------------------------

    def run(self, stopping: threading.Event) -> None:
        """Follow from the tracked position until `stopping` is set (a database error is raised)."""
        try:
            self._follow_from_tracked_position(stopping)
        except Exception as error:
            with self._lock:
                self._last_error = f"event log: {type(error).__name__}: {error}"
            raise

    def _follow_from_tracked_position(self, stopping: threading.Event) -> None:
        position = self.tracking.max_tracking_id(self.app.name) or 0
        with self._lock:
            self._position = max(self._position, position)
        subscription = self.app.recorder.subscribe(gt=position, topics=PUBLISH_TOPICS)
        with subscription_stopped_by(stopping, subscription):
            for notification in subscription:
                event = self.app.mapper.to_domain_event(notification)
                if not self._publish_until_accepted(event.originator_id, first_attempt_of(event), stopping):
                    return
                self._track(notification.id)

    def _publish_until_accepted(self, task_id: UUID, attempt: int, stopping: threading.Event) -> bool:
        """Publish until QStash answers 2xx (True) or the publisher is stopped (False)."""
        tries = 0
        while not stopping.is_set():
            tries += 1
            error = self._try_publish(task_id, attempt)
            if error is None:
                return True
            retry_after = error.retry_after if isinstance(error, PublishUnavailable) else None
            stopping.wait(retry_delay(tries, retry_after, self.backoff_base_seconds, self.backoff_cap_seconds))
        return False

    def _track(self, notification_id: int) -> None:
        try:
            self.tracking.insert_tracking(Tracking(self.app.name, notification_id))
        except IntegrityError:  # another publisher on this database tracked it first
            pass
        with self._lock:
            self._position = max(self._position, notification_id)

    def _failed(self, error: PublishError, task_id: UUID, attempt: int) -> None:
        with self._lock:
            self._failures += 1
            self._failing_since = self._failing_since or time.monotonic()
            self._last_error = f"{type(error).__name__}: {error}"
            failures = self._failures
        # A rejection (bad token, bad destination) is a configuration error: the operator must act.
        level = logging.ERROR if isinstance(error, PublishRejected) else logging.WARNING
        logger.log(
            level,
            "QStash did not take a message",
            extra={
                "task_id": str(task_id),
                "attempt": attempt,
                "status_code": error.status_code,
                "consecutive_failures": failures,
                "error": str(error),
            },
        )


class TakeoverSweeper:
    """Publishes the next attempt of tasks whose lease ran out or whose delivery was missed.

    `missed_delivery_seconds` must exceed the longest `Retry-After` the endpoint gives (300 s), so
    a task that waits for QStash's own retry is not published a second time.
    """

    def __init__(
        self,
        app: Any,
        views: Any,
        publisher: QStashPublisher,
        cache: Any,
        *,
        lease_seconds: float,
        missed_delivery_seconds: float = 330.0,
        sweep_seconds: float | None = None,
    ) -> None:
        self.app, self.views, self.publisher, self.cache = app, views, publisher, cache
        self.lease = timedelta(seconds=lease_seconds)
        self.missed_delivery = timedelta(seconds=missed_delivery_seconds)
        self.sweep_seconds = sweep_seconds or max(1.0, min(lease_seconds / 4, 60.0))
        self._published_at: dict[tuple[UUID, int], float] = {}
        self.sweeper = Sweeper("qstash-sweeper", self.sweep, self.sweep_seconds)
        self._supervised = Supervised()

    def start(self, supervisor: Supervisor | None = None) -> None:
        self._supervised.start(supervisor, self.sweeper)

    def stop(self) -> None:
        self._supervised.stop()

    def sweep(self) -> int:
        """Publish the next attempt of each overdue task (not again within QStash's deduplication window)."""
        now = time.monotonic()
        self._published_at = {k: at for k, at in self._published_at.items() if now - at < MESSAGE_REMEMBERED_SECONDS}
        published = 0
        found = {task.task_id: task.status for task in overdue_tasks(self.views, self.lease, self.missed_delivery)}
        for task_id in unseen_dispatches(self.app, self.views, self.missed_delivery):
            found.setdefault(task_id, "not in the read model")
        for task_id, status in found.items():
            attempt = self.app.next_attempt_due(task_id)  # the read model may lag: ask the history
            if attempt is None or (task_id, attempt) in self._published_at:
                continue
            if self.publisher.publish(task_id, attempt):
                self._published_at[(task_id, attempt)] = now
                published += 1
                logger.info(
                    "published a takeover", extra={"task_id": str(task_id), "attempt": attempt, "status": status}
                )
        self.cache.purge_expired()
        return published
