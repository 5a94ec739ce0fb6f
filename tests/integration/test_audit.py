"""Audits by replay: a clean history verifies; a corrupted one is caught, violation by violation."""

from __future__ import annotations

import time
from uuid import uuid4

from application.audit import HistoryAuditor, replay
from application.mediatasks import MediaTasks
from infrastructure.audit.history import rebuild, verify
from infrastructure.postgres.tables import construct_views
from infrastructure.postgres.views_pointer import active_views_name
from infrastructure.projection_runners import ProjectionRunners
from tests.support.projections import wait_refunds_projected

URL = "https://www.reddit.com/r/videos/comments/abc123/a_title/"


def busy_history(app: MediaTasks) -> None:
    app.create_user("ann", 20)
    app.create_user("bob", 3)
    for i in range(6):
        task_id = app.submit("ann", URL, "subtitles").task_id
        app.begin_attempt(task_id, "w")
        app.report_progress(task_id, 1, "metadata", 20)
        if i % 2:
            app.fail(task_id, 1, "media_not_found", "gone", retryable=False)
        else:
            app.complete(task_id, 1, {})
    failed = app.submit("bob", URL, "video").task_id
    app.begin_attempt(failed, "w")
    app.fail(failed, 1, "timeout", "slow", retryable=True)


def settle(app: MediaTasks, runners: ProjectionRunners) -> None:
    """Wait until refunds have landed and the read model has caught up with them."""
    wait_refunds_projected(app, runners)


def test_clean_history_verifies(app: MediaTasks, runners: ProjectionRunners) -> None:
    busy_history(app)
    settle(app, runners)
    report = verify(app, runners.views)
    assert report.ok, report.violations
    assert (report.tasks, report.accounts) == (7, 2)
    every = app.recorder.select_notifications(start=None, limit=100_000)  # ids may have gaps (lost races)
    assert report.events == len(every) and every[-1].id == app.recorder.max_notification_id()


def test_corrupted_history_names_each_violation(app: MediaTasks, runners: ProjectionRunners) -> None:
    busy_history(app)
    settle(app, runners)
    # Write what the domain would refuse, through the aggregates' recording methods (no checks there).
    account = app.get_account("ann")
    refund = next(e for e in app.repository.event_store.get(account.id) if type(e).__name__ == "Refunded")
    task_id = str(refund.task_id)
    account._refunded(task_id=refund.task_id, attempt=refund.attempt, amount=1)  # second refund
    ghost = uuid4()
    account._charged(task_id=ghost, attempt=1, amount=500)  # a charge for a missing task, balance < 0
    app.save(account)
    settle(app, runners)
    report = verify(app, runners.views)
    codes = {v.code for v in report.violations}
    assert {"double_refund", "charge_without_task", "negative_balance"} <= codes, report.violations
    double = next(v for v in report.violations if v.code == "double_refund")
    assert len(double.positions) == 2 and task_id in double.message
    assert any(str(ghost) in v.message for v in report.violations if v.code == "charge_without_task")


def test_lifecycle_violations_are_caught_from_events() -> None:
    """The auditor on its own, fed a history that skips steps."""
    from datetime import datetime, timezone

    from domain.credits import CreditAccount
    from domain.tasks import MediaTask

    now = datetime.now(timezone.utc)
    task = MediaTask.start(
        user_id="u",
        idempotency_key="k",
        url="https://youtu.be/x",
        platform="youtube",
        output_type="subtitles",
        languages=[],
        credits=1,
        requested_at=now,
        max_attempts=3,
    )
    account = CreditAccount.open("u")
    account.grant(1)
    account.charge(task.id, 1, 1)
    task.begin_attempt(now=now, lease=__import__("datetime").timedelta(seconds=60), worker_id="w")
    task.complete(attempt=1, result={})
    task._processed(attempt=1, stage="late", progress=50, details={})  # after the terminal state
    account._refunded(task_id=task.id, attempt=1, amount=1)  # refund of an extracted task
    auditor = HistoryAuditor(refunds_tracked_to=10**9)
    events = [*task.collect_events(), *account.collect_events()]
    for position, event in enumerate(events, start=1):
        auditor.feed(position, event)
    codes = {v.code for v in auditor.finish().violations}
    assert {"event_after_terminal", "refund_of_extracted"} <= codes


def test_rebuild_switches_readers_to_a_new_model_and_drops_the_old(app: MediaTasks, store_env: dict[str, str]) -> None:
    live = ProjectionRunners(store_env)  # follows the pointer, like `mediatasks serve`
    try:
        busy_history(app)
        settle(app, live)
        before = live.views.snapshot()
        old_name = live.views_name
        old, new, _ = rebuild(store_env, app, grace_seconds=5)
        assert (old, active_views_name(app.recorder.datastore)) == (old_name, new)
        deadline = time.monotonic() + 10
        while live.views_name != new:
            assert time.monotonic() < deadline, "the live runner did not follow the switch"
            time.sleep(0.1)
        assert live.views.snapshot() == before
        app.create_user("late", 1)  # the live runner keeps the new model up to date
        settle(app, live)
        assert live.views.get_account("late").balance == 1
        reader = construct_views(store_env, old_name)
        try:
            reader.get_task(uuid4())
            dropped = False
        except Exception:  # noqa: BLE001 - the old tables are gone
            dropped = True
        reader.datastore.close()
        assert dropped
    finally:
        live.stop()


def test_replay_reads_every_event_in_pages(app: MediaTasks) -> None:
    busy_history(app)
    positions = [p for p, _ in replay(app, page=7)]
    assert positions == [n.id for n in app.recorder.select_notifications(start=None, limit=100_000)]
    assert len(positions) > 7 * 3
