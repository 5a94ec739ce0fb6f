"""Each terminal failure is refunded exactly once: across restarts, re-runs, rivals and kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter

import psycopg
import pytest
from psycopg.sql import SQL, Identifier

from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from infrastructure.projection_runners import ProjectionRunners
from projections.refund_issuer import RefundIssuer
from tests.support.postgres import database_url

URL = "https://vimeo.com/76979871"


def fail_tasks(app: MediaTasks, user: str, n: int, *, succeed_every: int = 0) -> tuple[int, int]:
    """Submit n tasks; fail them permanently except every k-th, which completes. Returns (failed, extracted)."""
    failed = extracted = 0
    for i in range(n):
        task_id = app.submit(user, URL, "subtitles").task_id
        app.begin_attempt(task_id, "w")
        if succeed_every and i % succeed_every == 0:
            app.complete(task_id, 1, {})
            extracted += 1
        else:
            app.fail(task_id, 1, "media_not_found", "gone", retryable=False)
            failed += 1
    return failed, extracted


def refunds(app: MediaTasks, user: str) -> Counter[str]:
    account = app.get_account(user)
    return Counter(
        f"{e.task_id}:{e.attempt}" for e in app.repository.event_store.get(account.id) if type(e).__name__ == "Refunded"
    )


def wait_for_refunds(app: MediaTasks, user: str, expected: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while sum(refunds(app, user).values()) < expected:
        assert time.monotonic() < deadline, f"{sum(refunds(app, user).values())} of {expected} refunds"
        time.sleep(0.1)


def refund_issuer_behind(store_env: dict[str, str]) -> int:
    """How many events the refund issuer follows (failures) lie past its tracking position, whichever
    process runs it."""
    schema = Identifier(store_env["POSTGRES_SCHEMA"])
    with psycopg.connect(**_conn_kwargs(store_env), autocommit=True) as conn:
        row = conn.execute(
            SQL(
                "SELECT count(*) FROM {}.mediatasks_events WHERE topic = ANY(%s) AND notification_id > "
                "(SELECT coalesce(max(notification_id), 0) FROM {}.mediatasks_tracking "
                "WHERE application_name = 'MediaTasks')"
            ).format(schema, schema),
            (list(RefundIssuer.topics),),
        ).fetchone()
    assert row is not None
    return int(row[0])


def last_failure_position(store_env: dict[str, str]) -> int:
    """The notification id of the log's last failure (the last event the refund issuer follows)."""
    with psycopg.connect(**_conn_kwargs(store_env), autocommit=True) as conn:
        row = conn.execute(
            SQL("SELECT max(notification_id) FROM {}.mediatasks_events WHERE topic = ANY(%s)").format(
                Identifier(store_env["POSTGRES_SCHEMA"])
            ),
            (list(RefundIssuer.topics),),
        ).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def wait_refund_issuer_caught_up(store_env: dict[str, str], timeout: float = 30) -> None:
    """Until the refund issuer has processed every failure in the log: a second refund it would write
    for any of them is written by then (where a fixed sleep only hopes so)."""
    deadline = time.monotonic() + timeout
    while behind := refund_issuer_behind(store_env):
        assert time.monotonic() < deadline, f"refund issuer {behind} failures behind"
        time.sleep(0.05)


def assert_exactly_once(app: MediaTasks, user: str, failed: int, granted: int, extracted: int) -> None:
    counts = refunds(app, user)
    assert sum(counts.values()) == failed
    assert set(counts.values()) == {1}
    assert app.get_account(user).balance == granted - extracted


def test_refund_follows_a_terminal_failure_and_not_a_success(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("ann", 20)
    failed, extracted = fail_tasks(app, "ann", 6, succeed_every=3)
    runners = ProjectionRunners(store_env)
    try:
        wait_for_refunds(app, "ann", failed)
        wait_refund_issuer_caught_up(store_env)
    finally:
        runners.stop()
    assert_exactly_once(app, "ann", failed, 20, extracted)


def test_stop_restart_and_reprocessing_refund_nothing_twice(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("ben", 50)
    failed1, _ = fail_tasks(app, "ben", 5)
    runners = ProjectionRunners(store_env)
    wait_for_refunds(app, "ben", failed1)
    runners.stop()

    failed2, _ = fail_tasks(app, "ben", 5)
    runners = ProjectionRunners(store_env)
    wait_for_refunds(app, "ben", failed1 + failed2)
    runners.stop()

    # Run the refund issuer again over the same events from the start: the account refuses doubles.
    with psycopg.connect(**_conn_kwargs(store_env), autocommit=True) as conn:
        conn.execute(
            SQL("DELETE FROM {}.mediatasks_tracking WHERE application_name = 'MediaTasks'").format(
                Identifier(store_env["POSTGRES_SCHEMA"])
            )
        )
    assert refund_issuer_behind(store_env) == failed1 + failed2
    runners = ProjectionRunners(store_env)
    wait_refund_issuer_caught_up(store_env)
    runners.stop()
    assert_exactly_once(app, "ben", failed1 + failed2, 50, 0)


def test_two_rival_refund_issuers_refund_once(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("cy", 40)
    first, second = ProjectionRunners(store_env), ProjectionRunners(store_env)
    try:
        failed, _ = fail_tasks(app, "cy", 20)
        wait_for_refunds(app, "cy", failed)
        last_failure = last_failure_position(store_env)
        deadline = time.monotonic() + 30
        while not all((r.refunds_runner.position() or 0) >= last_failure for r in (first, second)):
            assert time.monotonic() < deadline, ([r.refunds_runner.position() for r in (first, second)], last_failure)
            time.sleep(0.05)
        first.check()
        second.check()
    finally:
        first.stop()
        second.stop()
    assert_exactly_once(app, "cy", failed, 40, 0)


@pytest.mark.slow
def test_runner_killed_between_refunds_resumes_without_doubles(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("dee", 400)
    failed, _ = fail_tasks(app, "dee", 300)
    pg = {
        k: store_env[k]
        for k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME")
    }
    env = {
        **os.environ,
        "MEDIATASKS_DATABASE_URL": database_url(pg),
        "MEDIATASKS_POSTGRES_SCHEMA": store_env["POSTGRES_SCHEMA"],
    }
    cmd = [sys.executable, "-m", "infrastructure.entrypoints.cli", "projections"]
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        start = sum(refunds(app, "dee").values())
        deadline = time.monotonic() + 30
        while sum(refunds(app, "dee").values()) < min(failed, start + 40) and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = sum(refunds(app, "dee").values())
        if done < failed:
            kills += 1
    assert kills >= 1, "the runner finished before it could be killed; use more tasks"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_refunds(app, "dee", failed, timeout=60)
        wait_refund_issuer_caught_up(store_env)
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    assert_exactly_once(app, "dee", failed, 400, 0)
    assert app.get_account("dee").balance == 400
    assert CreditAccount.id_for("dee") == app.get_account("dee").id


def _conn_kwargs(env: dict[str, str]) -> dict[str, str]:
    return {
        "host": env["POSTGRES_HOST"],
        "port": env["POSTGRES_PORT"],
        "user": env["POSTGRES_USER"],
        "password": env["POSTGRES_PASSWORD"] or None,
        "dbname": env["POSTGRES_DBNAME"],
    }
