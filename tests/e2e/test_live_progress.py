"""Live progress over SSE: current state first, resume with Last-Event-ID, end after a terminal state."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from uuid import UUID

import pytest

from application.mediatasks import MediaTasks
from infrastructure.settings import Settings
from tests.e2e.conftest import RunningService
from tests.support.sse import SseMessage, read_sse

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


@pytest.fixture
def worker(service: RunningService, pg_database_one: dict[str, str]) -> Iterator[MediaTasks]:
    """The test plays the worker: it writes attempt events straight into the service's store."""
    app = MediaTasks(env=Settings(postgres_schema=service.schema).event_store_env(pg_database_one))
    yield app
    app.close()


def status_messages(messages: Iterator[SseMessage], count: int) -> list[tuple[int, dict]]:
    out = []
    for message in messages:
        if message.event == "status":
            out.append((int(message.id), json.loads(message.data)))
            if len(out) == count:
                break
    return out


def test_stream_resume_and_end(service: RunningService, worker: MediaTasks) -> None:
    _, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        with c.stream("GET", f"/v1/tasks/{task_id}/events") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            messages = read_sse(r)
            [(first_id, first)] = status_messages(messages, 1)
            assert (first["status"], first["progress"], first["attempt"]) == ("queued", 0, 0)
            worker.begin_attempt(UUID(task_id), "w1")
            worker.report_progress(UUID(task_id), 1, "metadata", 20)
            worker.report_progress(UUID(task_id), 1, "video", 40)
            seen = status_messages(messages, 3)
        assert [(m["status"], m["progress"]) for _, m in seen] == [
            ("downloading", 10),
            ("processing", 20),
            ("processing", 40),
        ]
        ids = [first_id] + [i for i, _ in seen]
        assert ids == sorted(ids) and len(set(ids)) == 4

        # While disconnected, the task moves on; a resumed stream has no gap and no duplicate.
        worker.report_progress(UUID(task_id), 1, "subtitles", 70)
        worker.report_progress(UUID(task_id), 1, "upload", 90)
        worker.complete(UUID(task_id), 1, {"subtitles": []})
        started = time.monotonic()
        with c.stream("GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": str(ids[-1])}) as r:
            resumed = [(int(m.id), json.loads(m.data)) for m in read_sse(r) if m.event == "status"]
        assert [(m["status"], m["progress"]) for _, m in resumed] == [
            ("processing", 70),
            ("processing", 90),
            ("extracted", 100),
        ]
        assert resumed[0][0] > ids[-1]
        assert time.monotonic() - started < 5, "the stream must end after the terminal state"

        # A fresh stream of a finished task: just the current (terminal) state, then the end.
        with c.stream("GET", f"/v1/tasks/{task_id}/events") as r:
            final = [json.loads(m.data) for m in read_sse(r) if m.event == "status"]
        assert [(m["status"], m["progress"]) for m in final] == [("extracted", 100)]


def test_stream_sends_keep_alive_pings_while_quiet(service: RunningService) -> None:
    _, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        with c.stream("GET", f"/v1/tasks/{task_id}/events") as r:
            messages = read_sse(r)
            assert next(messages).event == "status"
            pings = next(messages)
            assert pings.comments and pings.event == "message" and pings.data == ""


def test_stream_of_failed_task_carries_the_error(service: RunningService, worker: MediaTasks) -> None:
    _, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        worker.begin_attempt(UUID(task_id), "w1")
        worker.fail(UUID(task_id), 1, "media_not_found", "The video is gone.", retryable=False)
        with c.stream("GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "0"}) as r:
            updates = [json.loads(m.data) for m in read_sse(r) if m.event == "status"]
        assert [u["status"] for u in updates] == ["queued", "downloading", "failed"]
        assert updates[-1]["error"]["code"] == "media_not_found"
        deadline = time.monotonic() + 10
        while c.get("/v1/account").json()["balance"] != 5:
            assert time.monotonic() < deadline, "refund did not land"
            time.sleep(0.05)
        task = c.get(f"/v1/tasks/{task_id}").json()
        assert task["status"] == "failed" and task["refunded_credits"] == 1
        kinds = [e["kind"] for e in c.get("/v1/account").json()["entries"]]
        assert kinds == ["refund", "charge", "grant"]
