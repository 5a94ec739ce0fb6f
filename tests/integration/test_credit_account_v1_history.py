"""A history recorded with the CreditAccount of before issue 19 (every charge and refund kept in the
account, refunds on the account only) still replays, refunds what is due exactly once and verifies."""

from __future__ import annotations

import base64
import json
import time
from collections import Counter
from pathlib import Path
from uuid import UUID

from eventsourcing.persistence import StoredEvent, Tracking

from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.audit.history import verify
from infrastructure.projection_runners import ProjectionRunners
from projections.refund_issuer import RefundIssuer

HISTORY = Path(__file__).parents[1] / "support" / "histories" / "credit_account_v1.json"
URL = "https://vimeo.com/76979871"


def stored(row: dict) -> StoredEvent:
    return StoredEvent(
        originator_id=UUID(row["originator_id"]),
        originator_version=row["originator_version"],
        topic=row["topic"],
        state=base64.b64decode(row["state"]),
    )


def account_refunds(app: MediaTasks, account_id: UUID) -> Counter[tuple[UUID, int]]:
    return Counter(
        (e.task_id, e.attempt)
        for e in app.repository.event_store.get(account_id)
        if isinstance(e, CreditAccount.Refunded)
    )


def test_a_v1_history_replays_refunds_once_and_verifies(app: MediaTasks, store_env: dict[str, str]) -> None:
    history = json.loads(HISTORY.read_text())
    recordings = app.recorder.insert_events([stored(row) for row in history["events"]])
    assert [r for r in recordings] == [row["id"] for row in history["events"]]
    app.snapshots.recorder.insert_events([stored(row) for row in history["snapshots"]])
    issuer = RefundIssuer(env=store_env)  # where the issuer of before stood: refunds up to here were issued
    issuer.recorder.insert_events([], tracking=Tracking(app.name, history["refund_issuer_position"]))
    issuer.close()
    tasks = {name: UUID(task_id) for name, task_id in history["tasks"].items()}

    account = app.get_account("olga")
    assert account.balance == history["balance"] == 5
    assert not hasattr(account, "charges") and not hasattr(account, "refunded")  # upcast from the v1 snapshot
    assert app.get_task(tasks["pending"]).refunds_due == {1: 1}
    assert app.get_task(tasks["retried"]).refunds_due == {1: 2, 2: 2}  # run 1 was refunded on the account only

    runners = ProjectionRunners(store_env)
    try:
        deadline = time.monotonic() + 30
        while app.get_account("olga").balance != 8:
            assert time.monotonic() < deadline, app.get_account("olga").balance
            time.sleep(0.1)
        refunds = account_refunds(app, account.id)
        assert refunds == Counter(
            {(tasks["refunded"], 1): 1, (tasks["retried"], 1): 1, (tasks["pending"], 1): 1, (tasks["retried"], 2): 1}
        )
        assert app.get_task(tasks["pending"]).refunds_given == [1]
        assert app.get_task(tasks["retried"]).refunds_given == [2]
        assert not [e for e in app.repository.event_store.get(tasks["refunded"]) if isinstance(e, MediaTask.Refunded)]

        # Today's writes on the old account, and a snapshot of today's (O(1)) state.
        app.submit("olga", URL, "subtitles", idempotency_key="after-upgrade")
        app.take_snapshot(account.id)
        snapshot = next(iter(app.snapshots.get(account.id, desc=True, limit=1)))
        assert set(snapshot.state) >= {"balance", "user_id"} and "charges" not in snapshot.state
        assert app.get_account("olga").balance == 7
        time.sleep(1)
        report = verify(app, runners.views)
        assert report.ok, report.violations
        assert (report.tasks, report.accounts, report.pending_refunds) == (6, 1, 0)
    finally:
        runners.stop()
