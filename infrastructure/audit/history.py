"""The audit commands' work: verify history and the read model, rebuild the read model."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from eventsourcing.persistence import Tracking

from application.audit import AuditReport, HistoryAuditor
from application.audit_chain import GENESIS, ChainCheck, CheckpointVerifier, merge_by_position
from infrastructure.collector import full_collections_held
from infrastructure.postgres.event_decoder import EventDecoder
from infrastructure.postgres.queries import tracking_position
from infrastructure.postgres.task_views import FoldPosition, TaskViewsBulkLoad
from projections.task_views import TaskViewsProjection

Progress = Callable[[int, int], None]
CONCURRENT_FROM = 50_000  # events: a verify of this many or more folds the read model in a second process
REFUNDS_TRACKING_TABLE = "mediatasks_tracking"  # the RefundIssuer's (it is named after the app it writes to)


@full_collections_held()
def verify(
    app: Any,
    views: Any,
    *,
    seal: Any = None,
    verifier: CheckpointVerifier | None = None,
    progress: Progress | None = None,
    concurrent: bool | None = None,
) -> AuditReport:
    """Replay every event, check the invariants and the sealed chain, and compare the read model with a
    fresh rebuild. The events and the chain are read in one consistent snapshot.

    `concurrent` (with the read model in PostgreSQL) splits the checks and the fold by aggregate
    between this process and a second one, in the same snapshot (three quarters of the tasks there,
    the accounts and the other tasks here, and the chain here: infrastructure/postgres/audit_side_checks.py):
    the same checks and findings. None (the default): from `CONCURRENT_FROM` events on,
    where the second process's start (about a second) pays for itself."""
    from infrastructure.postgres.audit_seal import PostgresSeal, sealed_history
    from infrastructure.postgres.audit_side_checks import ParentShare, SideChecks, tracked_in_snapshot, usable
    from infrastructure.postgres.task_views import (
        BackgroundSnapshot,
        PostgresTaskViews,
        folded,
        read_model_differences,
    )

    refunds_at = tracking_position(app.recorder, REFUNDS_TRACKING_TABLE, app.name) or 0
    auditor = HistoryAuditor(refunds_tracked_to=refunds_at)
    rebuild = TaskViewsBulkLoad(None, keep_updates=False)
    projection = TaskViewsProjection(view=rebuild)
    if concurrent is None:
        concurrent = (app.recorder.max_notification_id() or 0) >= CONCURRENT_FROM
    concurrent = concurrent and isinstance(views, PostgresTaskViews) and usable(app.mapper)
    background = None
    if isinstance(views, PostgresTaskViews) and not concurrent:
        background = BackgroundSnapshot(views, app.name)  # the live read model, read beside the replay
        views_at = background.position()
    elif not concurrent:
        views_at, live = _settled_snapshot(app, views)
    process, name = projection.dispatcher(), app.name
    with sealed_history(app, seal or PostgresSeal(app.recorder.datastore), export_snapshot=concurrent) as history:
        head = history.head
        chain = ChainCheck(history.checkpoints, verifier, auditor.violation)
        chain.set_last_link(history.last_link)
        check = chain.check

        def checked(merged: Iterable[tuple[int, Any, Any]], decodes: Callable[[Any], bool] | None) -> Iterator[Any]:
            """The rows, each checked against its link on the way; `decodes`: only the rows it takes."""
            for position, row, link in merged:
                check(position, row, link)
                if row is not None and (decodes is None or decodes(row)):
                    yield row

        def unapplied(position: int, event: Any, error: Exception) -> None:
            auditor.unreadable(position, error)

        decoder = EventDecoder(app.mapper)
        if concurrent:
            views_at = tracked_in_snapshot(history.snapshot.connection, views, name)
            side = SideChecks.start(history.snapshot, views, name, app.mapper)
            mine = ParentShare(history.snapshot, views, decoder)  # the rows this process decodes, its live rows
        merged = merge_by_position(history.events, history.links)
        events = decoder.events(checked(merged, mine.decodes if concurrent else None), auditor.unreadable)
        try:
            auditor.feed_all(
                folded(events, process, name, views_at, unapplied),
                None if progress is None else lambda p: progress(p, head),
                _progress_every(head),
            )
            if concurrent:
                side.imported()  # then this snapshot's transaction can end while the child goes on
                mine.imported()
        except BaseException:
            if concurrent:
                side.stop()
            raise
    if concurrent:
        live = mine.live()
        differences = read_model_differences(rebuild, live)  # this process's rows, while the child finishes
        auditor.add_task_states(side.task_states())  # the child's tasks: disjoint from this process's
        auditor.report.events += mine.skipped
    report = auditor.finish()
    report.chain = chain.finish()
    report.signatures_checked = verifier is not None
    if concurrent:
        report.violations.extend(side.result().violations)  # its comparison ran meanwhile
    else:
        if background is not None:
            live = background.rows()
        differences = read_model_differences(rebuild, live)
    for message in differences:
        auditor.violation("read_model_differs", message)
    live_accounts = live["accounts"]
    for account in auditor.accounts.values():
        row = next((a for a in live_accounts if a["user_id"] == account.user_id), None)
        if row is not None and views_at >= head and row["balance"] != account.balance:
            auditor.violation(
                "balance_differs", f"{account.user_id}: read model {row['balance']}, events {account.balance}"
            )
    if progress is not None:
        progress(head, head)
    return report


@full_collections_held()
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


@full_collections_held()
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


class RebuildInterrupted(Exception):
    """A rebuild stopped before its switch; `rebuild(resume=name)` goes on from its last commit."""

    def __init__(self, name: str, position: int) -> None:
        super().__init__(f"the rebuild of {name} stopped; its tables hold the events up to {position}")
        self.name, self.position = name, position


@full_collections_held()
def rebuild(
    env: dict[str, str],
    app: Any,
    *,
    grace_seconds: float | None = None,
    progress: Progress | None = None,
    page: int = 20_000,
    commit_every: int = 1_000_000,
    resume: str | None = None,
) -> tuple[str, str, float]:
    """Build the read model afresh under a new name, switch readers to it, drop the old one.

    The history up to the head is folded in memory and written with COPY (the appended rows page
    by page, tasks and accounts at the end, the secondary indexes built after the load); the events
    that arrived meanwhile are then applied in transactions of 2,000 while the live runners keep the
    old model current, and the pointer switches, so readers never see a half-built model.
    Every `commit_every` events the load commits (the rows changed since, upserted, and its position):
    interrupted (RebuildInterrupted, from KeyboardInterrupt too), `resume=` its name goes on from there.
    Returns (old name, new name, seconds taken to catch up).
    """
    from infrastructure.postgres.queries import event_rows
    from infrastructure.postgres.tables import construct_views, create_tables
    from infrastructure.postgres.views_pointer import POINTER_CHECK_SECONDS, active_views_name, switch_views

    started = time.perf_counter()
    if resume is not None and resume == active_views_name(app.recorder.datastore):
        raise ValueError(f"{resume} is the read model in use, not a rebuild to resume")
    new_name = resume or f"TaskViews_{time.strftime('%Y%m%d%H%M%S')}"
    if resume is None:
        create_tables(env, views_name=new_name)
    views = construct_views(env, new_name)
    load = TaskViewsBulkLoad(views)
    position = 0
    try:
        if resume is None:
            load.drop_secondary_indexes()
        else:
            position = load.restore(app.name)
        process, name = TaskViewsProjection(view=load).dispatcher(), app.name
        head = app.recorder.max_notification_id() or 0
        events = EventDecoder(app.mapper).events(event_rows(app.recorder, after=position, stop=head))
        count, loading, tracking = 0, True, FoldPosition(name)
        try:
            while loading:  # one transaction per `commit_every` events
                with views.datastore.transaction(commit=True) as curs:
                    curs.execute("SET LOCAL synchronous_commit = off")
                    for position, event in events:
                        tracking.notification_id = position
                        process(event, tracking)
                        count += 1
                        if count % page == 0:
                            load.flush(curs)
                            if progress is not None:
                                progress(position, head)
                        if count % commit_every == 0:
                            load.commit(curs, name)
                            break
                    else:
                        load.finish(curs, name)
                        loading = False
        finally:
            events.close()  # its cursor's transaction ends now, not when the generator is collected
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
    except KeyboardInterrupt as interrupted:
        raise RebuildInterrupted(new_name, views.max_tracking_id(app.name) or 0) from interrupted
    finally:
        views.datastore.close()
    time.sleep(grace_seconds if grace_seconds is not None else 2 * POINTER_CHECK_SECONDS + 1)
    if old_name != new_name:
        old = construct_views(env, old_name)
        old.drop_tables()
        old.datastore.close()
    return old_name, new_name, caught_up
