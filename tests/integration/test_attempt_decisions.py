"""DESIGN.md's idempotency table, one row per test, decided from the task's history alone."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from application.mediatasks import MediaTasks

URL = "https://youtu.be/dQw4w9WgXcQ"


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env={**store_env, "LEASE_SECONDS": "1", "MAX_ATTEMPTS": "3"})
    application.create_user("u", 100)
    yield application
    application.close()


def types(app: MediaTasks, task_id) -> list[str]:
    return [h.type for h in app.task_history(task_id)]


def test_started_task_begins_its_first_attempt(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    decision = app.begin_attempt(task_id, "w1", {"message_id": "m1", "retried": 0})
    assert (decision.outcome, decision.attempt) == ("started", 1)
    assert app.task_history(task_id)[-1].data["delivery"] == {"message_id": "m1", "retried": 0}


def test_extracted_task_is_skipped_as_already_completed(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    app.complete(task_id, 1, {})
    before = types(app, task_id)
    assert app.begin_attempt(task_id, "w2").outcome == "already_completed"
    assert types(app, task_id) == before


def test_active_attempt_within_lease_is_skipped_as_already_processing(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    decision = app.begin_attempt(task_id, "w2")
    assert decision.outcome == "already_processing"
    assert 0 < decision.lease_remaining <= 1
    assert types(app, task_id) == ["Started", "Downloading"]


def test_progress_events_are_heartbeats_that_extend_the_lease(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    for progress in (20, 30, 40):
        time.sleep(0.4)
        app.report_progress(task_id, 1, "video", progress)
    # 1.2 s since Downloading, but only 0 s since the last heartbeat: the lease holds.
    assert app.begin_attempt(task_id, "w2").outcome == "already_processing"


def test_expired_lease_is_taken_over_by_a_new_attempt(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    app.clock = lambda: MediaTasks.clock() + timedelta(seconds=2)
    decision = app.begin_attempt(task_id, "w2")
    assert (decision.outcome, decision.attempt) == ("retrying", 2)
    history = app.task_history(task_id)
    assert [h.type for h in history] == ["Started", "Downloading", "Failed", "Downloading"]
    assert history[2].data["code"] == "lease_expired" and history[2].data["terminal"] is False
    assert history[3].data["worker_id"] == "w2"


def test_expired_lease_on_the_last_attempt_fails_the_task(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.clock = lambda: MediaTasks.clock() + timedelta(seconds=2)
    for attempt in (1, 2, 3):
        app.clock = (lambda k: lambda: MediaTasks.clock() + timedelta(seconds=2 * k))(attempt)
        assert app.begin_attempt(task_id, f"w{attempt}").attempt == attempt
    app.clock = lambda: MediaTasks.clock() + timedelta(seconds=10)
    assert app.begin_attempt(task_id, "w4").outcome == "not_retryable"
    last = app.task_history(task_id)[-1]
    assert (last.type, last.data["code"], last.data["terminal"]) == ("Failed", "retries_exhausted", True)


def test_failed_retryable_with_attempts_left_starts_a_new_attempt(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    assert app.fail(task_id, 1, "upstream_unavailable", "503", retryable=True) is False
    decision = app.begin_attempt(task_id, "w1")
    assert (decision.outcome, decision.attempt) == ("retrying", 2)


def test_failed_retryable_on_the_last_attempt_is_retries_exhausted(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    for attempt in (1, 2, 3):
        app.begin_attempt(task_id, "w1")
        terminal = app.fail(task_id, attempt, "timeout", "slow", retryable=True)
    assert terminal is True
    assert app.task_history(task_id)[-1].data["code"] == "retries_exhausted"
    assert app.begin_attempt(task_id, "w1").outcome == "not_retryable"


def test_failed_permanently_is_skipped_as_not_retryable(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    assert app.fail(task_id, 1, "media_not_found", "404", retryable=False) is True
    before = types(app, task_id)
    assert app.begin_attempt(task_id, "w1").outcome == "not_retryable"
    assert types(app, task_id) == before


def test_fifty_concurrent_deliveries_start_exactly_one_attempt(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "video").task_id
    barrier = threading.Barrier(50)

    def deliver(n: int) -> str:
        barrier.wait()
        return app.begin_attempt(task_id, f"w{n}").outcome

    with ThreadPoolExecutor(50) as pool:
        outcomes = Counter(pool.map(deliver, range(50)))
    assert outcomes == {"started": 1, "already_processing": 49}
    assert types(app, task_id).count("Downloading") == 1


def test_next_attempt_due_is_none_while_a_lease_runs_or_the_task_is_finished(app: MediaTasks) -> None:
    task_id = app.submit("u", URL, "subtitles").task_id
    assert app.next_attempt_due(task_id) == 1
    app.begin_attempt(task_id, "w1")
    assert app.next_attempt_due(task_id) is None
    time.sleep(1.1)
    assert app.next_attempt_due(task_id) == 2
    app.begin_attempt(task_id, "w2")
    app.complete(task_id, 2, {})
    assert app.next_attempt_due(task_id) is None
