"""Live task updates: one event-log follower per process wakes the streams of the tasks it sees.

Streams read their task's updates from the read model only when woken (or after a long
safety interval), so the database is not polled per client.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic

from domain.tasks import MediaTask
from infrastructure.supervision import Supervised, Supervisor, subscription_stopped_by

logger = logging.getLogger(__name__)
LATEST_MAX = 100_000

TASK_TOPICS = tuple(
    get_topic(cls)
    for cls in (MediaTask.Started, MediaTask.Downloading, MediaTask.Processing, MediaTask.Extracted,
                MediaTask.Failed, MediaTask.Retried)
)


def wait_for_position(views: Any, application_name: str, notification_id: int, timeout: float) -> bool:
    """Poll the view's tracking position with a short backoff; True once it reaches the id."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        if views.has_tracking_id(application_name, notification_id):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


class TaskUpdateHub:
    """A supervised follower (infrastructure/supervision.py): after an error it resumes from the last event seen."""

    name = "task-update-hub"

    def __init__(self, app: Any, views: Any) -> None:
        self._app = app
        self._views = views
        self._lock = threading.Lock()
        self._waiters: dict[UUID, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = defaultdict(set)
        self._latest: OrderedDict[UUID, int] = OrderedDict()  # newest event position seen per task (bounded)
        self._position: int | None = None
        self._supervised = Supervised()

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Follow from the head now, under `supervisor` (else a supervisor of its own)."""
        self._position = self._app.recorder.max_notification_id() or 0
        self._supervised.start(supervisor, self)

    def stop(self) -> None:
        self._supervised.stop()

    def position(self) -> int | None:
        return self._position

    def register(self, task_id: UUID) -> tuple[asyncio.AbstractEventLoop, asyncio.Event]:
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters[task_id].add(waiter)
        return waiter

    def unregister(self, task_id: UUID, waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event]) -> None:
        with self._lock:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]

    def latest_position(self, task_id: UUID) -> int:
        """The newest event of the task this process has seen (0 if none since it started)."""
        with self._lock:
            return self._latest.get(task_id, 0)

    def run(self, stopping: threading.Event) -> None:
        """Follow from the last event seen until `stopping` is set; raises on error (streams fall back
        to their safety interval meanwhile)."""
        subscription = self._app.recorder.subscribe(gt=self._position, topics=TASK_TOPICS)
        with subscription_stopped_by(stopping, subscription):
            for notification in subscription:
                self._position = notification.id
                with self._lock:
                    self._latest[notification.originator_id] = notification.id
                    self._latest.move_to_end(notification.originator_id)
                    if len(self._latest) > LATEST_MAX:
                        self._latest.popitem(last=False)
                    waiters = list(self._waiters.get(notification.originator_id, ()))
                if not waiters:
                    continue
                wait_for_position(self._views, self._app.name, notification.id, timeout=5)
                for loop, event in waiters:
                    loop.call_soon_threadsafe(event.set)
