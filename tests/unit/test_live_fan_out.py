"""The task update hub reads the read model once per task event, whatever the number of streams of the task."""

from __future__ import annotations

import asyncio
import queue
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from infrastructure.api.live import StreamsPerUser, TaskUpdateHub
from projections.task_views import TaskUpdate


@dataclass
class Notification:
    id: int
    originator_id: UUID


class Subscription:
    def __init__(self) -> None:
        self.notifications: queue.Queue[Notification | None] = queue.Queue()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *_: Any) -> None:
        self.notifications.put(None)

    def stop(self) -> None:
        self.notifications.put(None)

    def __iter__(self) -> Any:
        while (notification := self.notifications.get()) is not None:
            yield notification


class Recorder:
    def __init__(self) -> None:
        self.subscription = Subscription()

    def max_notification_id(self) -> int:
        return 0

    def subscribe(self, gt: int, topics: Any) -> Subscription:
        return self.subscription


class App:
    name = "MediaTasks"

    def __init__(self) -> None:
        self.recorder = Recorder()


class Views:
    def __init__(self) -> None:
        self.updates: dict[UUID, list[TaskUpdate]] = {}
        self.reads: list[tuple[UUID, int]] = []

    def has_tracking_id(self, application_name: str, notification_id: int) -> bool:
        return True

    def task_updates(self, task_id: UUID, after: int = 0) -> list[TaskUpdate]:
        self.reads.append((task_id, after))
        return [u for u in self.updates.get(task_id, []) if u.position > after]


def update(task_id: UUID, position: int, progress: int) -> TaskUpdate:
    return TaskUpdate(
        position=position,
        task_id=task_id,
        status="processing",
        progress=progress,
        attempt=1,
        stage="download",
        error=None,
        at=datetime.now(UTC),
    )


def test_one_read_per_task_event_is_handed_to_every_stream_of_that_task() -> None:
    async def scenario() -> None:
        app, views = App(), Views()
        hub = TaskUpdateHub(app, views)
        hub.start()
        try:
            task, other = uuid4(), uuid4()
            streams = [hub.register(task) for _ in range(50)]
            bystander = hub.register(other)
            for position, progress in ((7, 10), (9, 40)):
                views.updates.setdefault(task, []).append(update(task, position, progress))
                app.recorder.subscription.notifications.put(Notification(position, task))
                got = await asyncio.gather(*(s.next_updates(timeout=5) for s in streams))
                assert all(g is not None and [u.position for u in g] == [position] for g in got)
                for s in streams:
                    s.after = position
            assert len(views.reads) == 2 == hub.reads, "one read per event, not one per stream"
            assert views.reads[1] == (task, 7), "the read starts after what every stream has already sent"
            assert await bystander.next_updates(timeout=0.05) is None, "another task's stream is not woken"
        finally:
            hub.stop()

    asyncio.run(scenario())


def test_streams_per_user_are_capped_and_released() -> None:
    streams = StreamsPerUser(2)
    assert streams.acquire("alice") and streams.acquire("alice")
    assert not streams.acquire("alice")
    assert streams.acquire("bob")
    streams.release("alice")
    assert streams.acquire("alice")


def test_an_idle_hub_resumes_from_where_a_new_stream_read_the_read_model() -> None:
    """An event the log has but the read model had not processed when the stream first read it (the
    projections run in another process) still reaches the stream, though the hub was idle then."""

    class LogAhead(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.followed_from: list[int] = []

        def max_notification_id(self) -> int:
            return 12  # the log's head when the hub resumes

        def subscribe(self, gt: int, topics: Any) -> Subscription:
            self.followed_from.append(gt)
            return self.subscription

    async def scenario() -> None:
        app, views = App(), Views()
        app.recorder = LogAhead()
        hub = TaskUpdateHub(app, views)
        hub.start()
        try:
            task = uuid4()
            stream = hub.register(task, follow_from=8)  # the model stood at 8 before the stream read it
            for _ in range(100):
                if app.recorder.followed_from:
                    break
                await asyncio.sleep(0.01)
            assert app.recorder.followed_from == [8], "resumed from the stream's read, not the log's head"
            views.updates[task] = [update(task, 11, 50)]  # the model processes event 11, below the head
            app.recorder.subscription.notifications.put(Notification(11, task))
            got = await stream.next_updates(timeout=5)
            assert got is not None and [u.position for u in got] == [11]
        finally:
            hub.stop()

    asyncio.run(scenario())
