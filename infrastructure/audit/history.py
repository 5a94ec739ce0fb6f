"""The audit commands' work: verify history and the read model, rebuild the read model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from eventsourcing.persistence import Tracking

from application.audit import AuditReport, HistoryAuditor
from application.audit_chain import GENESIS, ChainCheck, CheckpointVerifier, merge_by_position
from infrastructure.postgres.event_decoder import EventDecoder
from infrastructure.postgres.queries import tracking_position
from infrastructure.postgres.task_views import TaskViewsBulkLoad
from projections.task_views import TaskViewsProjection

Progress = Callable[[int, int], None]
REFUNDS_TRACKING_TABLE = "mediatasks_tracking"  # the RefundIssuer's (it is named after the app it writes to)


def verify(
    app: Any,
    views: Any,
    *,
    seal: Any = None,
    verifier: CheckpointVerifier | None = None,
    progress: Progress | None = None,
    concurrent: bool = False,
) -> AuditReport:
    """Replay every event, check the invariants and the sealed chain, and compare the read model with a
    fresh rebuild. The events and the chain are read in one consistent snapshot.

    `concurrent` (with the read model in PostgreSQL) runs the chain check and the read of the live read
    model in a second process, in the same snapshot as the replay
    (infrastructure/postgres/audit_side_checks.py): the same checks and findings. Off by default: on
    this project's shared 2-core machine it measured no faster (docs/performance.md)."""
    from infrastructure.postgres.audit_seal import PostgresSeal, sealed_history
    from infrastructure.postgres.task_views import PostgresTaskViews

    refunds_at = tracking_position(app.recorder, REFUNDS_TRACKING_TABLE, app.name) or 0
    auditor = HistoryAuditor(refunds_tracked_to=refunds_at)
    rebuild = TaskViewsBulkLoad(None, keep_updates=False)
    projection = TaskViewsProjection(view=rebuild)
    concurrent = concurrent and isinstance(views, PostgresTaskViews)
    if not concurrent:
        views_at, live = _settled_snapshot(app, views)
    process, name = projection.dispatcher(), app.name
    with sealed_history(app, seal or PostgresSeal(app.recorder.datastore), export_snapshot=concurrent) as history:
        head = history.head
        chain = ChainCheck(history.checkpoints, verifier, auditor.violation)
        chain.set_last_link(history.last_link)
        check = chain.check

        def checked(merged: Iterable[tuple[int, Any, Any]]) -> Iterator[Any]:
            for position, row, link in merged:
                check(position, row, link)
                if row is not None:
                    yield row

        def projected(events: Iterable[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
            for position, event in events:
                if position <= views_at:
                    try:
                        process(event, Tracking(name, position))
                    except Exception as e:  # noqa: BLE001 - a forged state: named, and the audit goes on
                        auditor.unreadable(position, e)
                yield position, event

        if concurrent:
            from infrastructure.postgres.audit_side_checks import SideChecks, tracked_in_snapshot

            views_at = tracked_in_snapshot(history.snapshot, views, name)
            side = SideChecks.start(history.snapshot, chain, views)
            rows: Iterable[Any] = history.events
        else:
            rows = checked(merge_by_position(history.events, history.links))
        events = EventDecoder(app.mapper).events(rows, auditor.unreadable)
        auditor.feed_all(
            projected(events), None if progress is None else lambda p: progress(p, head), _progress_every(head)
        )
        if concurrent:
            found = side.result()
    if concurrent:
        from infrastructure.postgres.audit_side_checks import load_live

        chain, live = found.chain, load_live(found.live)
        for violation in found.violations:
            auditor.violation(*violation)
        report = auditor.finish()
        report.chain = chain.report
    else:
        report = auditor.finish()
        report.chain = chain.finish()
    report.signatures_checked = verifier is not None
    fresh_json = rebuild.snapshot_json()  # equal bytes: equal rows, nothing to name
    if (fresh_json is None or fresh_json != _live_json(found.live if concurrent else live)) and (
        fresh := rebuild.snapshot()
    ) != live:
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
            auditor.violation(
                "balance_differs", f"{account.user_id}: read model {row['balance']}, events {account.balance}"
            )
    if progress is not None:
        progress(head, head)
    return report


def replay_invariants(
    app: Any, *, refunds_tracked_to: int | None = None, progress: Progress | None = None
) -> AuditReport:
    """The invariant replay alone (no chain, no read model): every event, decoded, through the auditor."""
    from infrastructure.postgres.queries import event_rows

    if refunds_tracked_to is None:
        refunds_tracked_to = tracking_position(app.recorder, REFUNDS_TRACKING_TABLE, app.name) or 0
    auditor = HistoryAuditor(refunds_tracked_to=refunds_tracked_to)
    head = app.recorder.max_notification_id() or 0
    auditor.feed_all(
        EventDecoder(app.mapper).events(event_rows(app.recorder, stop=head)),
        None if progress is None else lambda position: progress(position, head),
        _progress_every(head),
    )
    return auditor.finish()


def verify_chain(
    app: Any,
    *,
    seal: Any = None,
    verifier: CheckpointVerifier | None = None,
    after: int = 0,
    progress: Progress | None = None,
) -> AuditReport:
    """The sealed chain alone, from the last checkpoint at or before `after` (the chain needs a signed start)."""
    from infrastructure.postgres.audit_seal import PostgresSeal, sealed_history

    seal = seal or PostgresSeal(app.recorder.datastore)
    report = AuditReport()
    anchor, anchor_at = GENESIS, 0
    if after:
        start = seal.checkpoints(stop=after, last=True)
        if start:
            anchor, anchor_at = start[0].chain, start[0].position
    with sealed_history(app, seal, after=anchor_at) as history:
        head = history.head
        chain = ChainCheck(history.checkpoints, verifier, report.add, anchor=anchor, anchor_position=anchor_at)
        chain.set_last_link(history.last_link)
        check = chain.check
        every = _progress_every(head)
        events = 0
        for position, row, link in merge_by_position(history.events, history.links):
            check(position, row, link)
            events += row is not None
            if progress is not None and position % every == 0:
                progress(position, head)
    report.events = events
    report.chain = chain.finish()
    report.signatures_checked = verifier is not None
    report.invariants_checked = False
    if progress is not None:
        progress(head, head)
    return report


def _live_json(live: bytes | dict[str, Any]) -> bytes | None:
    """The live snapshot as `plain_json` writes it (sorted keys), or None where orjson refuses it."""
    if isinstance(live, bytes):
        return live
    try:
        return orjson.dumps(live, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None


def _progress_every(head: int) -> int:
    return max(1, min(10_000, head // 200 or 1))


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


def rebuild(
    env: dict[str, str],
    app: Any,
    *,
    grace_seconds: float | None = None,
    progress: Progress | None = None,
    page: int = 20_000,
) -> tuple[str, str, float]:
    """Build the read model afresh under a new name, switch readers to it, drop the old one.

    The history up to the head is folded in memory and written with COPY (the appended rows page
    by page, tasks and accounts at the end, the secondary indexes built after the load); the events
    that arrived meanwhile are then applied in transactions of 2,000 while the live runners keep the
    old model current, and the pointer switches, so readers never see a half-built model.
    Returns (old name, new name, seconds taken to catch up).
    """
    from infrastructure.postgres.queries import event_rows
    from infrastructure.postgres.tables import construct_views, create_tables
    from infrastructure.postgres.views_pointer import POINTER_CHECK_SECONDS, switch_views

    started = time.perf_counter()
    new_name = f"TaskViews_{time.strftime('%Y%m%d%H%M%S')}"
    create_tables(env, views_name=new_name)
    views = construct_views(env, new_name)
    try:
        load = TaskViewsBulkLoad(views)
        load.drop_secondary_indexes()
        process, name = TaskViewsProjection(view=load).dispatcher(), app.name
        head = app.recorder.max_notification_id() or 0
        with views.datastore.transaction(commit=True) as curs:
            curs.execute("SET LOCAL synchronous_commit = off")
            count = 0
            for position, event in EventDecoder(app.mapper).events(event_rows(app.recorder, stop=head)):
                process(event, Tracking(name, position))
                count += 1
                if count % page == 0:
                    load.flush(curs)
                    if progress is not None:
                        progress(position, head)
            load.finish(curs, name)
        position = load.position
        projection = TaskViewsProjection(view=views)
        while True:  # what arrived during the load, in transactions of 2,000 events
            head = app.recorder.max_notification_id() or 0
            if position >= head:
                break
            notifications = app.recorder.select_notifications(start=position, limit=2000, inclusive_of_start=False)
            with views.batch():
                for notification in notifications:
                    projection.process_event(
                        app.mapper.to_domain_event(notification), Tracking(app.name, notification.id)
                    )
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
