"""The embedded dispatcher: follows the event log and runs attempts on a bounded worker pool.

- `Started` and `Retried` → run the task now;
- a non-terminal `Failed` → run it again after a backoff (the failure's Retry-After, else exponential);
- a sweeper finds tasks whose lease ran out (their worker died) or whose dispatch was missed,
  and runs them: `begin_attempt` decides from history whether to take over.

The follower of the log and the sweeper run under the process's Supervisor
(infrastructure/supervision.py): after a database error each starts again, the follower from the
last position it handled, so no Started or Retried written meanwhile is missed.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.tasks import MediaTask
from domain.vocabulary import ACTIVE_STATUSES, WAITING_STATUSES, AttemptOutcome
from infrastructure.postgres.store_connections import is_connection_error
from infrastructure.supervision import Supervised, Supervisor, subscription_stopped_by

logger = logging.getLogger(__name__)

DISPATCH_TOPICS = tuple(get_topic(c) for c in (MediaTask.Started, MediaTask.Retried, MediaTask.Failed))
ATTEMPT_TOPICS = tuple(get_topic(c) for c in (MediaTask.Started, MediaTask.Retried))
UNSEEN_LIMIT = 500


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float = 300.0) -> float:
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    return min(base * 2 ** max(attempt - 1, 0), cap)


class InlineDispatcher:
    """Runs attempts of the tasks it sees in the log; its follower is named `dispatcher`."""

    name = "dispatcher"

    def __init__(
        self,
        app: Any,
        views: Any,
        pipeline: Any,
        *,
        workers: int,
        lease_seconds: float,
        retry_base_seconds: float = 2.0,
        sweep_seconds: float | None = None,
        missed_dispatch_seconds: float = 30.0,
    ) -> None:
        self.app, self.views, self.pipeline = app, views, pipeline
        self.lease = timedelta(seconds=lease_seconds)
        self.retry_base_seconds = retry_base_seconds
        self.sweep_seconds = sweep_seconds or max(1.0, min(lease_seconds / 4, 60.0))
        self.missed_dispatch = timedelta(seconds=missed_dispatch_seconds)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="attempt")
        self._pending: set[UUID] = set()
        self._again: set[UUID] = set()
        self._lock = threading.Lock()
        self._timers: list[tuple[float, str, UUID]] = []
        self._wakeup = threading.Condition()
        self._stopped = threading.Event()
        self._timer_thread: threading.Thread | None = None
        self._position: int | None = None
        self._supervised = Supervised()
        self.sweeper = Sweeper("dispatch-sweeper", self.sweep, self.sweep_seconds, initial=self.initial_sweep)

    # Lifecycle ------------------------------------------------------------------

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Follow the log from its head now, and sweep; under `supervisor` (else a supervisor of its own)."""
        self._position = self.app.recorder.max_notification_id() or 0
        self._timer_thread = threading.Thread(target=self._schedule_loop, name="dispatch-timers", daemon=True)
        self._timer_thread.start()
        self._supervised.start(supervisor, self, self.sweeper)

    def stop(self) -> None:
        self._stopped.set()
        with self._wakeup:
            self._wakeup.notify_all()
        self._supervised.stop()
        if self._timer_thread is not None:
            self._timer_thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)

    def position(self) -> int | None:
        """The last notification this dispatcher handled (where it resumes after an error)."""
        return self._position

    # Dispatching ----------------------------------------------------------------

    def dispatch(self, task_id: UUID) -> bool:
        """Queue one run of the task; if one is queued or running here, run it once more after that."""
        with self._lock:
            if self._stopped.is_set():
                return False
            if task_id in self._pending:
                self._again.add(task_id)
                return False
            self._pending.add(task_id)
        self.pool.submit(self._run, task_id)
        return True

    def dispatch_later(self, task_id: UUID, delay: float) -> None:
        with self._wakeup:
            heapq.heappush(self._timers, (time.monotonic() + delay, str(task_id), task_id))
            self._wakeup.notify()

    def _run(self, task_id: UUID) -> None:
        try:
            outcome = self.pipeline.run(task_id, {"via": "inline"})
            if outcome.outcome == AttemptOutcome.ALREADY_PROCESSING and outcome.lease_remaining > 0:
                self.dispatch_later(task_id, outcome.lease_remaining + 0.5)
        except Exception as error:  # noqa: BLE001 - the sweeper will find the task again
            logger.exception("attempt crashed", extra={"task_id": str(task_id)})
            if is_connection_error(error):  # the database went away: try again soon, not at the next sweep
                self.dispatch_later(task_id, max(self.retry_base_seconds, 1.0))
        finally:
            with self._lock:
                self._pending.discard(task_id)
                again = task_id in self._again
                self._again.discard(task_id)
            if again:
                self.dispatch(task_id)

    def run(self, stopping: threading.Event) -> None:
        """Follow Started, Retried and Failed from the last position handled until `stopping` is set."""
        subscription = self.app.recorder.subscribe(gt=self._position, topics=DISPATCH_TOPICS)
        with subscription_stopped_by(stopping, subscription):
            for notification in subscription:
                if stopping.is_set():
                    return
                event = self.app.mapper.to_domain_event(notification)
                if isinstance(event, MediaTask.Failed):
                    if not event.terminal:
                        details = event.context.get("details") or {}
                        delay = retry_delay(event.attempt, details.get("retry_after"), self.retry_base_seconds)
                        self.dispatch_later(event.originator_id, delay)
                else:
                    self.dispatch(event.originator_id)
                self._position = notification.id

    def _schedule_loop(self) -> None:
        with self._wakeup:
            while not self._stopped.is_set():
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, task_id = heapq.heappop(self._timers)
                    self.dispatch(task_id)
                timeout = self._timers[0][0] - now if self._timers else 1.0
                self._wakeup.wait(timeout=max(0.01, timeout))

    def initial_sweep(self) -> int:
        return self.sweep(initial=True)

    def sweep(self, *, initial: bool = False) -> int:
        """Dispatch tasks whose lease ran out, and queued ones whose dispatch was missed."""
        found = overdue_tasks(self.views, self.lease, self.missed_dispatch, initial=initial)
        found_ids = {task.task_id for task in found}
        found_ids.update(unseen_dispatches(self.app, self.views, self.missed_dispatch, initial=initial))
        self.pipeline.cache.purge_expired()
        return sum(self.dispatch(task_id) for task_id in found_ids)


class Sweeper:
    """A follower that calls `sweep` every `every_seconds` (and `initial` once at the start of each run).

    A failed sweep raises: the supervisor logs it, counts it and starts the sweeper again after a backoff.
    """

    def __init__(
        self, name: str, sweep: Callable[[], Any], every_seconds: float, initial: Callable[[], Any] | None = None
    ) -> None:
        self.name, self.sweep, self.every_seconds, self.initial = name, sweep, every_seconds, initial
        self.last_sweep_at: float | None = None

    def run(self, stopping: threading.Event) -> None:
        if self.initial is not None:
            self.initial()
            self.last_sweep_at = time.time()
        while not stopping.wait(self.every_seconds):
            self.sweep()
            self.last_sweep_at = time.time()


def overdue_tasks(views: Any, lease: timedelta, missed_dispatch: timedelta, *, initial: bool = False) -> list[Any]:
    """Tasks whose lease ran out (their worker died), and waiting ones not run for `missed_dispatch`.

    `initial`: every waiting task counts (a process starting up cannot know what was dispatched).
    """
    now = datetime.now(timezone.utc)
    found = views.stale_tasks(now - lease, statuses=ACTIVE_STATUSES)
    waiting_since = now if initial else now - missed_dispatch
    return found + views.stale_tasks(waiting_since, statuses=WAITING_STATUSES)


def unseen_dispatches(
    app: Any, views: Any, missed_dispatch: timedelta, *, initial: bool = False, limit: int = UNSEEN_LIMIT
) -> list[UUID]:
    """Tasks whose Started or Retried is in the event log but not yet in the read model, from the log.

    A read model that stopped (or lags) must not hide accepted tasks from the sweeper. Only those
    older than `missed_dispatch` count (every one when `initial`): newer ones are being dispatched.
    """
    position = views.max_tracking_id(app.name) or 0
    notifications = app.recorder.select_notifications(position, limit, topics=ATTEMPT_TOPICS, inclusive_of_start=False)
    before = datetime.now(timezone.utc) - (timedelta(0) if initial else missed_dispatch)
    found: list[UUID] = []
    for notification in notifications:
        event = app.mapper.to_domain_event(notification)
        if event.timestamp < before and event.originator_id not in found:
            found.append(event.originator_id)
    return found
