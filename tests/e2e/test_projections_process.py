"""`serve`'s projections process killed with SIGKILL while refunds are being issued.

Tasks fail on the fake platform one after another (each refunded by the refund issuer, which runs in
the projections process); mid-stream the process is killed. `serve` starts it again, its /readyz
says `projections_down` and then `ready`; no submission meanwhile failed (writes do not need it);
every failed task has exactly one refund (events and balance); reads right after a refund show it;
`audit verify` is clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from application.audit import replay
from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from infrastructure.settings import Settings
from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform
from tests.support.postgres import database_url

TASKS = 60  # one every SUBMIT_EVERY seconds: failures and refunds go on before, during and after the kill
SUBMIT_EVERY = 0.05


def readiness(service: RunningService) -> tuple[int, dict]:
    r = httpx.get(service.url + "/readyz", timeout=10)
    return r.status_code, r.json()


def wait_readiness(service: RunningService, status: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (found := readiness(service))[1]["status"] != status:
        assert time.monotonic() < deadline, found
        time.sleep(0.05)
    assert found[0] == (200 if status == "ready" else 503), found
    return found[1]


def refunds_in_log(app: MediaTasks, user_id: str) -> int:
    """The refunds of the user's account in the event log (not the read model)."""
    events = app.recorder.select_events(CreditAccount.id_for(user_id))
    return sum(1 for e in events if e.topic.endswith("CreditAccount.Refunded"))


@pytest.mark.slow
def test_a_killed_projections_process_is_restarted_and_every_failure_refunded_once(
    pg_database_one: dict[str, str], tmp_path: Path, platform: FakePlatform
) -> None:
    settings = platform_settings(
        platform, workers="4", follower_backoff_base_seconds="0.2", follower_backoff_cap_seconds="0.5"
    )
    with running_service(pg_database_one, tmp_path, **settings) as service:
        user_id, key = service.new_user(TASKS)
        env = Settings(postgres_schema=service.schema, postgres_pool_size=1, postgres_max_overflow=1)
        app = MediaTasks(env=env.event_store_env(pg_database_one))
        answers: list[int] = []
        task_ids: list[str] = []

        def submit() -> None:  # failing tasks, paced; every answer recorded
            with service.client(key) as c:
                for _ in range(TASKS):
                    r = c.post("/v1/tasks", json={"url": platform.media_url("404"), "output_type": "subtitles"})
                    answers.append(r.status_code)
                    if r.status_code == 202:
                        task_ids.append(r.json()["task_id"])
                    time.sleep(SUBMIT_EVERY)

        submitter = threading.Thread(target=submit)
        try:
            before = readiness(service)[1]["projections_process"]
            submitter.start()
            deadline = time.monotonic() + 30
            while refunds_in_log(app, user_id) < 3:  # refunds are being issued
                assert time.monotonic() < deadline, "no refund was issued"
                time.sleep(0.05)
            os.kill(before["pid"], signal.SIGKILL)
            down = wait_readiness(service, "projections_down", timeout=10)
            assert down["projections_process"]["state"] == "down" and "projections process" in down["reason"]
            back = wait_readiness(service, "ready")["projections_process"]
            assert back["pid"] != before["pid"] and back["restarts"] == before["restarts"] + 1
        finally:
            submitter.join()
        assert answers == [202] * TASKS, "a submission failed while the projections process was down"

        with service.client(key) as c:  # read-your-writes right after each refund the log shows
            deadline = time.monotonic() + 60
            while (refunded := refunds_in_log(app, user_id)) < TASKS:
                assert time.monotonic() < deadline, f"{refunded} of {TASKS} refunds"
                account = c.get("/v1/account", params={"limit": 200}).json()
                assert sum(e["kind"] == "refund" for e in account["entries"]) >= refunded
                assert account["balance"] >= refunded
                time.sleep(0.05)
            assert c.get("/v1/account").json()["balance"] == TASKS
            assert all(c.get(f"/v1/tasks/{t}").json()["refunded_credits"] == 1 for t in task_ids)
            listed = c.get("/v1/tasks", params={"limit": 100}).json()["tasks"]
            assert sorted(t["task_id"] for t in listed if t["refunded_credits"] == 1) == sorted(task_ids)

        refunds: Counter[str] = Counter()
        for _, event in replay(app):
            if isinstance(event, CreditAccount.Refunded):
                refunds[str(event.task_id)] += 1
        app.close()
        assert refunds == Counter({t: 1 for t in task_ids}), "each failed task refunded exactly once"
        audit = subprocess.run(
            [sys.executable, "-m", "infrastructure.entrypoints.cli", "audit", "verify"],
            env={
                "PATH": "/usr/bin:/bin",
                "MEDIATASKS_DATABASE_URL": database_url(pg_database_one),
                "MEDIATASKS_POSTGRES_SCHEMA": service.schema,
            },
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr


def _nice_of(pid: int, thread: str | None = None) -> int:
    """A process's (or one of its threads') nice value, field 19 of its stat file."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat" if thread else f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def test_the_projections_process_runs_every_thread_below_the_api_s_priority(
    pg_database_one: dict[str, str], tmp_path: Path
) -> None:
    with running_service(pg_database_one, tmp_path, "--no-dispatch", projections_nice="7") as service:
        child = readiness(service)[1]["projections_process"]["pid"]
        threads = os.listdir(f"/proc/{child}/task")
        ours = _nice_of(os.getpid())
        assert len(threads) > 1 and {_nice_of(child, t) for t in threads} == {min(19, ours + 7)}  # every thread
        assert _nice_of(service.process.proc.pid) == ours  # the API keeps its priority
