"""`mediatasks audit` as a command on the configured store: history, as-of, verify's exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from uuid import uuid4

from application.mediatasks import MediaTasks
from infrastructure.projection_runners import ProjectionRunners
from tests.support.postgres import database_url

URL = "https://www.facebook.com/watch/?v=123456789"


def audit(store_env: dict[str, str], *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    pg = {
        k: store_env[k]
        for k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME")
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDIATASKS_")},
        "MEDIATASKS_DATABASE_URL": database_url(pg),
        "MEDIATASKS_POSTGRES_SCHEMA": store_env["POSTGRES_SCHEMA"],
        **{f"MEDIATASKS_{k.upper()}": v for k, v in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.entrypoints.cli", "audit", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_history_as_of_and_verify(app: MediaTasks, runners: ProjectionRunners, store_env: dict[str, str]) -> None:
    app.create_user("cli", 5)
    task_id = app.submit("cli", URL, "subtitles").task_id
    app.begin_attempt(task_id, "w1")
    app.report_progress(task_id, 1, "metadata", 20)
    middle = datetime.now(timezone.utc)
    time.sleep(0.05)
    app.fail(task_id, 1, "media_private", "private", retryable=False)
    deadline = time.monotonic() + 15
    while app.get_account("cli").balance != 5:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    runners.wait_for(app.recorder.max_notification_id(), timeout=15)

    table = audit(store_env, "history", str(task_id))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert [line.split()[3] for line in lines[1:]] == ["Started", "Downloading", "Processing", "Failed", "Refunded"]
    assert "code=media_private" in lines[-2] and "credits=1" in lines[-1]
    as_json = [json.loads(line) for line in audit(store_env, "history", str(task_id), "--json").stdout.splitlines()]
    assert [e["version"] for e in as_json] == [1, 2, 3, 4, 5]

    past = json.loads(audit(store_env, "as-of", str(task_id), middle.isoformat()).stdout)
    assert (past["status"], past["progress"], past["version"]) == ("processing", 20, 3)
    assert audit(store_env, "as-of", str(task_id), "2000-01-01T00:00:00Z").returncode == 1

    ok = audit(store_env, "verify")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.strip().splitlines()[-1].startswith("OK:")

    account = app.get_account("cli")
    account._charged(task_id=uuid4(), attempt=1, amount=50)
    app.save(account)
    runners.wait_for(app.recorder.max_notification_id(), timeout=15)
    bad = audit(store_env, "verify")
    assert bad.returncode == 1
    assert "VIOLATION negative_balance" in bad.stdout and "VIOLATION charge_without_task" in bad.stdout
    assert "violation(s)" in bad.stdout.splitlines()[-1]

    missing = audit(store_env, "history", str(uuid4()))
    assert missing.returncode == 1 and "no such task" in missing.stderr.lower()


def test_seal_seals_the_log_to_its_head_and_resumes(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("sealer", 3)
    head = app.recorder.max_notification_id()
    sealed = audit(store_env, "seal", audit_hmac_key="k" * 32)
    assert sealed.returncode == 0, sealed.stderr
    assert f"sealed to {head} " in sealed.stdout
    app.create_user("later", 1)
    again = audit(store_env, "seal", audit_hmac_key="k" * 32)  # goes on from its tracking
    assert f"sealed to {app.recorder.max_notification_id()} " in again.stdout, again.stderr
    checked = audit(store_env, "verify", "--from", "1", audit_hmac_key="k" * 32)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"sealed to {app.recorder.max_notification_id()} by" in checked.stdout
    assert "not sealed yet" not in checked.stdout and "signatures not checked" not in checked.stdout
    unsigned = audit(store_env, "seal")
    assert unsigned.returncode == 1 and "no signing key" in unsigned.stderr
