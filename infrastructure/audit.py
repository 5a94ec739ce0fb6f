"""The audit commands' work: verify history and the read model, rebuild the read model."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import Tracking

from application.audit import AuditReport, HistoryAuditor, replay
from infrastructure.postgres.queries import tracking_position
from projections.memory_views import MemoryTaskViews
from projections.task_views import TaskViewsProjection

Progress = Callable[[int, int], None]
REFUNDS_TRACKING_TABLE = "mediatasks_tracking"  # the RefundIssuer's (it is named after the app it writes to)


def verify(app: Any, views: Any, *, progress: Progress | None = None) -> AuditReport:
    """Replay every event, check the invariants, and compare the read model with a fresh rebuild."""
    head = app.recorder.max_notification_id() or 0
    refunds_at = tracking_position(app.recorder, REFUNDS_TRACKING_TABLE, app.name) or 0
    auditor = HistoryAuditor(refunds_tracked_to=refunds_at)
    rebuild = MemoryTaskViews()
    projection = TaskViewsProjection(view=rebuild)
    views_at, live = _settled_snapshot(app, views)
    for position, event in replay(app, stop=head):
        auditor.feed(position, event)
        if position <= views_at:
            projection.process_event(event, Tracking(app.name, position))
        if progress is not None and position % 1000 == 0:
            progress(position, head)
    report = auditor.finish()
    fresh = rebuild.snapshot()
    if fresh != live:
        for table in ("tasks", "accounts", "ledger"):
            live_rows = {_row_key(r): r for r in live[table]}
            for row in fresh[table]:
                if live_rows.pop(_row_key(row), None) != row:
                    auditor.violation("read_model_differs", f"{table} row {_row_key(row)} differs from a rebuild")
            for key in live_rows:
                auditor.violation("read_model_differs", f"{table} row {key} is not in a rebuild")
    for account in auditor.accounts.values():
        row = next((a for a in live["accounts"] if a["user_id"] == account.user_id), None)
        if row is not None and views_at >= head and row["balance"] != account.balance:
            auditor.violation("balance_differs", f"{account.user_id}: read model {row['balance']}, events "
                              f"{account.balance}")
    if progress is not None:
        progress(head, head)
    return report


def _settled_snapshot(app: Any, views: Any, tries: int = 5) -> tuple[int, dict[str, Any]]:
    """The read model and the position it reflects, read while it is not moving."""
    for _ in range(tries):
        before = views.max_tracking_id(app.name) or 0
        snapshot = views.snapshot()
        if (views.max_tracking_id(app.name) or 0) == before:
            return before, snapshot
        time.sleep(0.2)
    return before, snapshot


def _row_key(row: dict[str, Any]) -> str:
    return str(row.get("task_id") or row.get("account_id") or row.get("position"))


def rebuild(env: dict[str, str], app: Any, *, grace_seconds: float | None = None,
            progress: Progress | None = None, page: int = 2000) -> tuple[str, str, float]:
    """Build the read model afresh under a new name, switch readers to it, drop the old one.

    The catch-up applies `page` events per transaction; the last stretch and the switch happen
    while the live runners keep the old model current, so readers never see a half-built one.
    Returns (old name, new name, seconds taken to catch up).
    """
    from infrastructure.postgres.tables import construct_views, create_tables
    from infrastructure.postgres.views_pointer import POINTER_CHECK_SECONDS, switch_views

    started = time.perf_counter()
    new_name = f"TaskViews_{time.strftime('%Y%m%d%H%M%S')}"
    create_tables(env, views_name=new_name)
    views = construct_views(env, new_name)
    projection = TaskViewsProjection(view=views)
    try:
        position = 0
        while True:
            head = app.recorder.max_notification_id() or 0
            if position >= head:
                break
            notifications = app.recorder.select_notifications(start=position, limit=page, inclusive_of_start=False)
            with views.batch():
                for notification in notifications:
                    projection.process_event(app.mapper.to_domain_event(notification),
                                             Tracking(app.name, notification.id))
            position = notifications[-1].id if notifications else head
            if progress is not None:
                progress(position, head)
        caught_up = time.perf_counter() - started
        old_name = switch_views(app.recorder.datastore, new_name)
    finally:
        views.datastore.close()
    time.sleep(grace_seconds if grace_seconds is not None else 2 * POINTER_CHECK_SECONDS + 1)
    if old_name != new_name:
        old = construct_views(env, old_name)
        old.drop_tables()
        old.datastore.close()
    return old_name, new_name, caught_up
