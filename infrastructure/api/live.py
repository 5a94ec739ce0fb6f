"""Live task updates: one event-log follower per process feeds the streams of the tasks it sees.

For each event of a task that has open streams, the follower reads the task's new updates from the
read model once and hands that one answer to every stream of the task; a stream reads by itself only
when it opens, after a long safety interval, or when the follower could not read. The number of
streams one user may hold open in a process is capped (`StreamsPerUser`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from typing import Any
from uuid import UUID

from eventsourcing.utils import get_topic
from sse_starlette.sse import EventSourceResponse
from starlette.types import Receive, Scope, Send

from domain.tasks import MediaTask
from infrastructure.polling import poll
from infrastructure.supervision import Supervised, Supervisor, subscription_stopped_by

logger = logging.getLogger(__name__)
LATEST_MAX = 100_000
IDLE_SECONDS = 30.0  # the hub stops following the log this long after its last stream closed

TASK_TOPICS = tuple(
    get_topic(cls)
    for cls in (
        MediaTask.Started,
        MediaTask.Downloading,
        MediaTask.Processing,
        MediaTask.Extracted,
        MediaTask.Failed,
        MediaTask.Retried,
    )
)


def wait_for_position(views: Any, application_name: str, notification_id: int, timeout: float) -> bool:
    """Poll the view's tracking position with a short backoff; True once it reaches the id."""
    return bool(poll(lambda: views.has_tracking_id(application_name, notification_id), timeout))


class TaskStream:
    """One open stream's mailbox: the hub drops the updates it read here and wakes the stream."""

    def __init__(self, loop: asyncio.AbstractEventLoop, after: int, follow_from: int | None = None) -> None:
        self.loop = loop
        self.after = after  # the newest position the stream has sent (read by the hub's thread)
        self.follow_from = follow_from  # the read model's position before the stream's first read of it
        self._pending: dict[int, Any] = {}
        self._reread = False
        self._woken = asyncio.Event()

    def deliver(self, updates: list[Any] | None) -> None:
        """In the stream's loop: new updates, or None when the stream must read them itself."""
        if updates is None:
            self._reread = True
        else:
            self._pending.update((u.position, u) for u in updates if u.position > self.after)
        self._woken.set()

    async def next_updates(self, timeout: float) -> list[Any] | None:
        """The updates delivered since the last call, in order; None on timeout or when asked to re-read."""
        try:
            await asyncio.wait_for(self._woken.wait(), timeout=timeout)
        except TimeoutError:
            return None
        self._woken.clear()
        if self._reread:
            self._reread = False
            self._pending.clear()
            return None
        updates = [self._pending[p] for p in sorted(self._pending) if p > self.after]
        self._pending.clear()
        return updates


class TaskUpdateHub:
    """A supervised follower (infrastructure/supervision.py): after an error it resumes from the last event seen."""

    name = "task-update-hub"

    def __init__(self, app: Any, views: Any) -> None:
        self._app = app
        self._views = views
        self._lock = threading.Lock()
        self._streams: dict[UUID, set[TaskStream]] = defaultdict(set)
        self._latest: OrderedDict[UUID, int] = OrderedDict()  # newest event position seen per task (bounded)
        self._position: int | None = None
        self._supervised = Supervised()
        self._streams_open = threading.Event()  # set by the first stream after an idle spell
        self._last_stream_at = 0.0
        self._idle = True  # the first stream starts it following, from the head of the log then
        self.reads = 0  # read-model reads made for streams (one per task event that has streams)

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Follow from the head now, under `supervisor` (else a supervisor of its own)."""
        self._position = self._app.recorder.max_notification_id() or 0
        self._supervised.start(supervisor, self)

    def stop(self) -> None:
        self._supervised.stop()

    def position(self) -> int | None:
        return self._position

    def register(self, task_id: UUID, after: int = 0, follow_from: int | None = None) -> TaskStream:
        """A mailbox for a stream of the task; `follow_from` is the read model's tracking position read
        before the stream's first read of the model (an idle hub resumes from there, not the head)."""
        stream = TaskStream(asyncio.get_running_loop(), after, follow_from)
        with self._lock:
            self._streams[task_id].add(stream)
            self._last_stream_at = time.monotonic()
        self._streams_open.set()
        return stream

    def unregister(self, task_id: UUID, stream: TaskStream) -> None:
        with self._lock:
            streams = self._streams.get(task_id)
            if streams is not None:
                streams.discard(stream)
                if not streams:
                    del self._streams[task_id]
            self._last_stream_at = time.monotonic()

    def latest_position(self, task_id: UUID) -> int:
        """The newest event of the task this process has seen (0 if none since it started)."""
        with self._lock:
            return self._latest.get(task_id, 0)

    def run(self, stopping: threading.Event) -> None:
        """Follow from the last event seen until `stopping` is set, while streams are open (and for
        IDLE_SECONDS after the last one closed); raises on error (streams fall back to their safety
        interval meanwhile). Resumed after an idle spell, it follows from the head of the log then, or
        from where the open streams' first reads of the read model stood if that is older (events the
        model had not processed when a stream read it are fanned out to it)."""
        while not stopping.is_set():
            if not self._streams_open.wait(0.5):
                continue
            if self._idle:
                self._position = self._resume_position()
                self._idle = False
            subscription = self._app.recorder.subscribe(gt=self._position, topics=TASK_TOPICS)
            with subscription_stopped_by(stopping, subscription):
                for notification in subscription:
                    self._seen(notification)
                    if self._idle_now():
                        break

    def _resume_position(self) -> int:
        head = self._app.recorder.max_notification_id() or 0
        with self._lock:
            starts = [s.follow_from for ss in self._streams.values() for s in ss if s.follow_from is not None]
        return min([head, *starts])

    def _seen(self, notification: Any) -> None:
        self._position = notification.id
        with self._lock:
            self._latest[notification.originator_id] = notification.id
            self._latest.move_to_end(notification.originator_id)
            if len(self._latest) > LATEST_MAX:
                self._latest.popitem(last=False)
            streams = list(self._streams.get(notification.originator_id, ()))
        if streams:
            self._fan_out(notification, streams)

    def _idle_now(self) -> bool:
        """No stream open for IDLE_SECONDS: stop following (the next stream starts it again)."""
        with self._lock:
            if self._streams or time.monotonic() - self._last_stream_at < IDLE_SECONDS:
                return False
            self._streams_open.clear()
            self._idle = True
            return True

    def _fan_out(self, notification: Any, streams: list[TaskStream]) -> None:
        """One read of the task's updates since the oldest of its streams, handed to all of them."""
        updates: list[Any] | None
        try:
            wait_for_position(self._views, self._app.name, notification.id, timeout=5)
            self.reads += 1
            updates = self._views.task_updates(notification.originator_id, min(s.after for s in streams))
        except Exception:  # noqa: BLE001 - each stream reads for itself this time
            logger.exception("task update hub could not read the task's updates")
            updates = None
        for stream in streams:
            try:
                stream.loop.call_soon_threadsafe(stream.deliver, updates)
            except RuntimeError:  # its event loop has closed (the server is stopping)
                continue


class StreamsPerUser:
    """How many live streams each user holds open in this process, capped at `limit` (event-loop only)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: Counter[str] = Counter()

    def acquire(self, user_id: str) -> bool:
        if self._open[user_id] >= self.limit:
            return False
        self._open[user_id] += 1
        return True

    def release(self, user_id: str) -> None:
        self._open[user_id] -= 1
        if self._open[user_id] <= 0:
            del self._open[user_id]


class CountedEventSourceResponse(EventSourceResponse):
    """An SSE response that calls `on_close` once it ends, however it ends (done, disconnect, cancel)."""

    def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()
