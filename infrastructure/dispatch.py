"""The embedded dispatcher: follows the event log and runs attempts on a bounded worker pool.

- `Started` and `Retried` → run the task now;
- a non-terminal `Failed` → run it again after a backoff (the failure's Retry-After, else exponential);
- a sweeper finds tasks whose lease ran out (their worker died) or whose dispatch was missed,
  and runs them: `begin_attempt` decides from history whether to take over.
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

logger = logging.getLogger(__name__)

DISPATCH_TOPICS = tuple(get_topic(c) for c in (MediaTask.Started, MediaTask.Retried, MediaTask.Failed))


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float = 300.0) -> float:
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, cap)
    return min(base * 2 ** max(attempt - 1, 0), cap)


class InlineDispatcher:
    def __init__(self, app: Any, views: Any, pipeline: Any, *, workers: int, lease_seconds: float,
                 retry_base_seconds: float = 2.0, sweep_seconds: float | None = None,
                 missed_dispatch_seconds: float = 30.0) -> None:
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
        self._threads: list[threading.Thread] = []
        self._subscription: Any = None

    # Lifecycle ------------------------------------------------------------------

    def start(self) -> None:
        head = self.app.recorder.max_notification_id()
        self._subscription = self.app.recorder.subscribe(gt=head, topics=DISPATCH_TOPICS)
        self._subscription.__enter__()
        for target, name in ((self._follow, "dispatch-follow"), (self._schedule_loop, "dispatch-timers"),
                             (self._sweep_loop, "dispatch-sweep")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.sweep(initial=True)

    def stop(self) -> None:
        self._stopped.set()
        with self._wakeup:
            self._wakeup.notify_all()
        if self._subscription is not None:
            self._subscription.__exit__(None, None, None)
        for thread in self._threads:
            thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)

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
            if outcome.outcome == "already_processing" and outcome.lease_remaining > 0:
                self.dispatch_later(task_id, outcome.lease_remaining + 0.5)
        except Exception:  # noqa: BLE001 - the sweeper will find the task again
            logger.exception("attempt crashed", extra={"task_id": str(task_id)})
        finally:
            with self._lock:
                self._pending.discard(task_id)
                again = task_id in self._again
                self._again.discard(task_id)
            if again:
                self.dispatch(task_id)

    def _follow(self) -> None:
        try:
            for notification in self._subscription:
                if self._stopped.is_set():
                    return
                event = self.app.mapper.to_domain_event(notification)
                if isinstance(event, MediaTask.Failed):
                    if not event.terminal:
                        details = event.context.get("details") or {}
                        delay = retry_delay(event.attempt, details.get("retry_after"), self.retry_base_seconds)
                        self.dispatch_later(event.originator_id, delay)
                else:
                    self.dispatch(event.originator_id)
        except Exception:  # noqa: BLE001 - the sweeper keeps tasks moving
            if not self._stopped.is_set():
                logger.exception("dispatcher stopped following the log")

    def _schedule_loop(self) -> None:
        with self._wakeup:
            while not self._stopped.is_set():
                now = time.monotonic()
                while self._timers and self._timers[0][0] <= now:
                    _, _, task_id = heapq.heappop(self._timers)
                    self.dispatch(task_id)
                timeout = self._timers[0][0] - now if self._timers else 1.0
                self._wakeup.wait(timeout=max(0.01, timeout))

    def _sweep_loop(self) -> None:
        sweep_until_stopped(self.sweep, self.sweep_seconds, self._stopped)

    def sweep(self, *, initial: bool = False) -> int:
        """Dispatch tasks whose lease ran out, and queued ones whose dispatch was missed."""
        found = overdue_tasks(self.views, self.lease, self.missed_dispatch, initial=initial)
        self.pipeline.cache.purge_expired()
        return sum(self.dispatch(task.task_id) for task in found)


def sweep_until_stopped(sweep: Callable[[], Any], every_seconds: float, stopped: threading.Event) -> None:
    """Call `sweep` every `every_seconds` until `stopped` is set; a failed sweep is logged and tried again."""
    while not stopped.wait(every_seconds):
        try:
            sweep()
        except Exception:  # noqa: BLE001 - try again next round
            logger.exception("sweep failed")


def overdue_tasks(views: Any, lease: timedelta, missed_dispatch: timedelta, *, initial: bool = False) -> list[Any]:
    """Tasks whose lease ran out (their worker died), and waiting ones not run for `missed_dispatch`.

    `initial`: every waiting task counts (a process starting up cannot know what was dispatched).
    """
    now = datetime.now(timezone.utc)
    found = views.stale_tasks(now - lease, statuses=("downloading", "processing"))
    waiting_since = now if initial else now - missed_dispatch
    return found + views.stale_tasks(waiting_since, statuses=("queued", "retrying"))
