"""The outbox publisher and the takeover sweeper against the QStash emulator, on real PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import TypeVar

import pytest
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.utils import get_topic

from application.mediatasks import MediaTasks
from domain.tasks import MediaTask
from infrastructure.delivery.qstash_client import QStashPublishClient
from infrastructure.delivery.qstash_outbox_publisher import (
    TRACKING_TABLE,
    PublisherStatus,
    QStashPublisher,
    TakeoverSweeper,
)
from infrastructure.postgres.metadata_cache import PostgresMetadataCache
from infrastructure.projection_runners import ProjectionRunners
from tests.support.qstash_emulator import QStashEmulator

PUBLIC_URL = "https://mediatasks.example/v1/deliveries/qstash"
URL = "https://youtu.be/dQw4w9WgXcQ"
T = TypeVar("T")


@pytest.fixture
def emulator() -> Iterator[QStashEmulator]:
    with QStashEmulator(retry_delay_scale=0.01, seed=3) as running:
        running.route("https://mediatasks.example", "http://127.0.0.1:9")  # nobody listens: deliveries fail
        yield running


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env={**store_env, "LEASE_SECONDS": "1"})
    application.create_user("u", 100)
    yield application
    application.close()


@pytest.fixture
def start_publisher(app: MediaTasks, emulator: QStashEmulator) -> Iterator[Callable[[], QStashPublisher]]:
    started: list[tuple[QStashPublisher, QStashPublishClient]] = []

    def start() -> QStashPublisher:
        client = QStashPublishClient(emulator.url, emulator.token, PUBLIC_URL, retries=0)
        publisher = QStashPublisher(app, tracking(app), client, backoff_base_seconds=0.05)
        publisher.start()
        started.append((publisher, client))
        return publisher

    yield start
    for publisher, client in started:
        publisher.stop()
        client.close()


def tracking(app: MediaTasks) -> PostgresTrackingRecorder:
    return PostgresTrackingRecorder(app.recorder.datastore, tracking_table_name=TRACKING_TABLE)


def wait_for(condition: Callable[[], T], timeout: float = 10) -> T:
    """The condition's first truthy value, asked every 20 ms."""
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
    return value


def started_at(app: MediaTasks, task_id: object) -> int:
    """The position of the task's Started event in the log (what the publisher tracks)."""
    topic = get_topic(MediaTask.Started)
    [position] = [
        n.id
        for n in app.recorder.select_notifications(start=1, limit=10_000, topics=[topic])
        if n.originator_id == task_id
    ]
    return position


def accepted(emulator: QStashEmulator) -> list[dict]:
    return [json.loads(p.body) for p in emulator.publishes if 200 <= p.status_code < 300 and not p.deduplicated]


def test_each_started_task_is_published_with_its_deduplication_id(
    app: MediaTasks, emulator: QStashEmulator, start_publisher: Callable[[], QStashPublisher]
) -> None:
    publisher = start_publisher()
    tasks = [app.submit("u", URL, "subtitles") for _ in range(3)]
    wait_for(lambda: len(accepted(emulator)) == 3)
    assert accepted(emulator) == [{"task_id": str(t.task_id), "attempt": 1} for t in tasks]
    assert [p.headers["upstash-deduplication-id"] for p in emulator.publishes] == [f"{t.task_id}-1" for t in tasks]
    assert {p.headers["upstash-retries"] for p in emulator.publishes} == {"0"}
    wait_for(lambda: tracking(app).max_tracking_id(app.name) == started_at(app, tasks[-1].task_id))
    assert publisher.status().published == 3


def test_the_position_moves_only_after_qstash_answered_2xx(
    app: MediaTasks, emulator: QStashEmulator, start_publisher: Callable[[], QStashPublisher]
) -> None:
    emulator.fail_publishes(500, count=2)
    emulator.fail_publishes(429, count=2, retry_after="0.3")
    publisher = start_publisher()
    task = app.submit("u", URL, "subtitles")

    def tracked_while_failing() -> tuple[int | None, PublisherStatus] | None:
        # The emulator records a publish before its answer reaches the publisher, so the publisher's
        # count is waited for. The position is read first: a status still failing after it proves no
        # 2xx had come by then (a 2xx resets the count before the position is tracked).
        tracked = tracking(app).max_tracking_id(app.name)
        status = publisher.status()
        return (tracked, status) if status.consecutive_failures >= 3 else None

    tracked, status = wait_for(tracked_while_failing)
    assert tracked is None
    assert status.failing_since is not None
    assert "PublishUnavailable" in status.last_error
    wait_for(lambda: accepted(emulator))
    wait_for(lambda: tracking(app).max_tracking_id(app.name) == started_at(app, task.task_id))
    assert [p.status_code for p in emulator.publishes] == [500, 500, 429, 429, 201]
    assert accepted(emulator) == [{"task_id": str(task.task_id), "attempt": 1}]
    assert publisher.status().consecutive_failures == 0 and publisher.status().failing_since is None


def test_a_refused_message_is_published_again_and_nothing_is_skipped(
    app: MediaTasks, emulator: QStashEmulator, start_publisher: Callable[[], QStashPublisher]
) -> None:
    emulator.fail_publishes(401, count=2)  # e.g. a wrong token, until the operator fixes it
    start_publisher()
    first, second = app.submit("u", URL, "subtitles"), app.submit("u", URL, "video")
    wait_for(lambda: len(accepted(emulator)) == 2)
    assert [p.status_code for p in emulator.publishes] == [401, 401, 201, 201]
    assert [m["task_id"] for m in accepted(emulator)] == [str(first.task_id), str(second.task_id)]


def test_a_restarted_publisher_goes_on_from_its_tracked_position(
    app: MediaTasks, emulator: QStashEmulator, start_publisher: Callable[[], QStashPublisher]
) -> None:
    first = start_publisher()
    app.submit("u", URL, "subtitles")
    wait_for(lambda: first.status().published == 1)
    wait_for(lambda: tracking(app).max_tracking_id(app.name) is not None)
    first.stop()
    later = app.submit("u", URL, "video")
    second = start_publisher()
    wait_for(lambda: second.status().published == 1)
    time.sleep(0.3)
    assert len(emulator.publishes) == 2
    assert accepted(emulator)[-1] == {"task_id": str(later.task_id), "attempt": 1}


def test_a_user_retry_publishes_the_first_attempt_of_the_new_cycle(
    app: MediaTasks, emulator: QStashEmulator, start_publisher: Callable[[], QStashPublisher]
) -> None:
    start_publisher()
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w")
    app.fail(task_id, 1, "media_not_found", "gone", retryable=False)
    app.retry_task("u", task_id)
    wait_for(lambda: len(accepted(emulator)) == 2)
    assert accepted(emulator) == [{"task_id": str(task_id), "attempt": 1}, {"task_id": str(task_id), "attempt": 2}]
    assert emulator.publishes[-1].headers["upstash-deduplication-id"] == f"{task_id}-2"


def test_the_sweeper_publishes_the_takeover_of_an_expired_lease_once(
    app: MediaTasks, store_env: dict[str, str], emulator: QStashEmulator
) -> None:
    runners = ProjectionRunners(store_env)
    client = QStashPublishClient(emulator.url, emulator.token, PUBLIC_URL, retries=0)
    try:
        publisher = QStashPublisher(app, tracking(app), client)
        sweeper = TakeoverSweeper(
            app, runners.views, publisher, PostgresMetadataCache(app.recorder.datastore), lease_seconds=1
        )
        held, running = app.submit("u", URL, "subtitles").task_id, app.submit("u", URL, "video").task_id
        app.begin_attempt(held, "dead-worker")
        runners.wait_for(app.recorder.max_notification_id())
        assert sweeper.sweep() == 0  # the lease still runs, and queued tasks wait for QStash
        time.sleep(1.1)
        last = app.begin_attempt(running, "live-worker").notification_id
        runners.wait_for(last)
        assert sweeper.sweep() == 1
        assert sweeper.sweep() == 0  # not again within QStash's deduplication window
        assert accepted(emulator) == [{"task_id": str(held), "attempt": 2}]
        assert emulator.publishes[0].headers["upstash-deduplication-id"] == f"{held}-2"
        stale = datetime.now(timezone.utc) - timedelta(seconds=1)
        assert [t.task_id for t in runners.views.stale_tasks(stale, statuses=("downloading",))] == [held]
    finally:
        client.close()
        runners.stop()
