"""Followers on real PostgreSQL under the supervisor: restarted from their tracking position; /readyz names them."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from fastapi.testclient import TestClient
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from application.mediatasks import MediaTasks
from infrastructure.api.app import create_status_api
from infrastructure.delivery.inline_dispatcher import unseen_dispatches
from infrastructure.postgres.tables import construct_views
from infrastructure.projection_followers import ProjectionFollower
from infrastructure.settings import Settings
from infrastructure.supervision import Supervisor
from projections.task_views import TaskViewsProjection

URL = "https://www.tiktok.com/@fake/video/7"


class FailsOnceAt(TaskViewsProjection):
    """The read model's projection, but processing position `fail_at` fails once (as a dropped connection would)."""

    fail_at = 0
    failed = False
    processed: list[int] = []

    def process_event(self, domain_event: Any, tracking: Any) -> None:  # type: ignore[override]
        if tracking.notification_id == self.fail_at and not FailsOnceAt.failed:
            FailsOnceAt.failed = True
            raise OperationalError("server closed the connection unexpectedly")
        super().process_event(domain_event, tracking)
        FailsOnceAt.processed.append(tracking.notification_id)


class Crashing:
    name = "crashy"

    def run(self, stopping: threading.Event) -> None:
        raise OperationalError("connection refused")


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env=store_env)
    application.create_user("u", 100)
    yield application
    application.close()


def test_a_projection_that_fails_is_restarted_from_its_tracking_position(
    app: MediaTasks, store_env: dict[str, str]
) -> None:
    tasks = [app.submit("u", URL + str(n), "subtitles").task_id for n in range(5)]
    head = app.recorder.max_notification_id()
    FailsOnceAt.fail_at, FailsOnceAt.failed, FailsOnceAt.processed = head - 2, False, []
    views = construct_views(store_env)
    source = MediaTasks(env=store_env)
    supervisor = Supervisor(backoff_base_seconds=0.05, backoff_cap_seconds=0.1)
    try:
        supervisor.add(ProjectionFollower("read-model", source, lambda _: FailsOnceAt(view=views)))
        views.wait(app.name, head, timeout=20)
        [status] = supervisor.statuses()
        assert status.restarts == 1 and status.state == "running"
        assert "server closed the connection" in (status.last_error or "")
        later = app.submit("u", URL + "99", "subtitles")
        views.wait(app.name, later.notification_id, timeout=20)
    finally:
        supervisor.stop()
        source.close()
    # The failed run's page was rolled back and applied again by the next run: nothing skipped, nothing twice.
    assert FailsOnceAt.processed[-1] == later.notification_id
    assert set(FailsOnceAt.processed) >= set(range(FailsOnceAt.fail_at, later.notification_id + 1))
    assert all(views.get_task(t) is not None for t in [*tasks, later.task_id])
    charges = [e for e in views.ledger("u") if e.kind == "charge"]
    assert sorted(e.task_id for e in charges) == sorted([*tasks, later.task_id])  # each charge once
    assert views.get_account("u").balance == 100 - 6
    assert all(len(views.task_updates(t)) == 1 for t in [*tasks, later.task_id])
    views.datastore.close()


def test_readyz_names_a_follower_that_keeps_failing(app: MediaTasks, store_env: dict[str, str]) -> None:
    views = construct_views(store_env)
    supervisor = Supervisor(backoff_base_seconds=0.2, backoff_cap_seconds=0.2)
    runtime = SimpleNamespace(app=app, views=views, settings=Settings(), supervisor=supervisor)
    client = TestClient(create_status_api(runtime))
    try:
        assert client.get("/readyz").status_code == 200
        supervisor.add(Crashing())
        deadline = time.monotonic() + 10
        while not (r := client.get("/readyz")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        body = r.json()
        assert body["status"] == "follower_down"
        assert "crashy is restarting" in body["reason"] and "connection refused" in body["reason"]
        [crashy] = body["followers"]
        assert crashy["name"] == "crashy" and crashy["restarts"] >= 1
        assert r.headers["Retry-After"]
        supervisor.remove("crashy")
        assert client.get("/readyz").status_code == 200
        assert client.get("/healthz").status_code == 200
    finally:
        supervisor.stop()
        views.datastore.close()


def test_readyz_answers_503_within_its_timeout_when_the_store_does_not_answer(app: MediaTasks) -> None:
    black_hole = socket.create_server(("127.0.0.1", 0))  # accepts TCP connections and never speaks
    port = black_hole.getsockname()[1]
    app.recorder.datastore.pool.close()
    app.recorder.datastore.pool = ConnectionPool(
        f"host=127.0.0.1 port={port} dbname=x user=postgres", open=False, min_size=1, kwargs={"row_factory": dict_row}
    )
    runtime = SimpleNamespace(
        app=app,
        views=SimpleNamespace(tracking_table_name="taskviews_tracking"),
        settings=Settings(ready_timeout_seconds=0.5),
        supervisor=Supervisor(),
    )
    try:
        client = TestClient(create_status_api(runtime))
        started = time.monotonic()
        r = client.get("/readyz")
        took = time.monotonic() - started
        assert r.status_code == 503, r.text
        assert r.json()["status"] == "unavailable"
        assert took < 2.0, took
        assert client.get("/healthz").status_code == 200  # liveness does not depend on the store
    finally:
        runtime.supervisor.stop()
        black_hole.close()


def test_the_sweeper_finds_accepted_tasks_the_read_model_has_not_seen(
    app: MediaTasks, store_env: dict[str, str]
) -> None:
    views = construct_views(store_env)  # nothing projects into it: the read model stopped
    try:
        submitted = [app.submit("u", URL + str(n), "subtitles").task_id for n in range(3)]
        assert views.get_task(submitted[0]) is None
        assert unseen_dispatches(app, views, timedelta(seconds=30)) == []  # too young: being dispatched
        assert unseen_dispatches(app, views, timedelta(seconds=30), initial=True) == submitted
        assert unseen_dispatches(app, views, timedelta(0)) == submitted
    finally:
        views.datastore.close()
