"""The read model rebuilt from event 1 under a new name equals the live one (and a memory rebuild)."""

from __future__ import annotations

from uuid import UUID

from eventsourcing.persistence import Tracking

from application.mediatasks import MediaTasks
from infrastructure.postgres.tables import create_tables
from infrastructure.projection_runners import ProjectionRunners
from projections.memory_views import MemoryTaskViews
from projections.task_views import TaskViewsProjection
from tests.support.projections import wait_refunds_projected

URL = "https://x.com/someone/status/1790000000000000000"


def make_history(app: MediaTasks) -> None:
    app.create_user("ivy", 30)
    app.create_user("jon", 5)
    for i in range(8):
        task_id = app.submit("ivy", URL, "video", idempotency_key=f"k{i}").task_id
        app.begin_attempt(task_id, "w")
        app.report_progress(task_id, 1, "metadata", 20, {"title": f"clip {i}"})
        if i % 3 == 0:
            app.fail(task_id, 1, "media_private", "private", retryable=False)
        elif i % 3 == 1:
            app.fail(task_id, 1, "upstream_unavailable", "503", retryable=True)
        else:
            app.complete(task_id, 1, {"timings": {"total": 0.1}})
    app.grant_credits("jon", 7, "promo")


def test_rebuild_under_new_name_equals_live_view(store_env: dict[str, str]) -> None:
    app = MediaTasks(env=store_env)
    live = ProjectionRunners(store_env)
    try:
        make_history(app)
        wait_refunds_projected(app, live)  # the refund issuer appends refunds: they land and are projected
        head = app.recorder.max_notification_id()
        live_snapshot = live.views.snapshot()
    finally:
        live.stop()

    create_tables(store_env, views_name="TaskViewsRebuild")
    rebuilt = ProjectionRunners(store_env, views_name="TaskViewsRebuild")
    try:
        rebuilt.wait_for(head, timeout=20)
        assert rebuilt.views.snapshot() == live_snapshot
    finally:
        rebuilt.stop()

    memory = MemoryTaskViews()
    projection = TaskViewsProjection(view=memory)
    for notification in app.recorder.select_notifications(start=None, limit=10_000):
        projection.process_event(app.mapper.to_domain_event(notification), Tracking(app.name, notification.id))
    assert memory.snapshot() == live_snapshot
    assert len(live_snapshot["tasks"]) == 8
    assert {a["user_id"]: a["balance"] for a in live_snapshot["accounts"]} == {"ivy": 30 - 8 * 2 + 3 * 2, "jon": 12}
    app.close()


def test_bulk_rebuild_with_copy_equals_the_live_view(store_env: dict[str, str]) -> None:
    """`rebuild` folds in memory and loads with COPY: the same rows, progress updates included."""
    from infrastructure.audit.history import rebuild
    from infrastructure.postgres.tables import construct_views

    app = MediaTasks(env=store_env)
    live = ProjectionRunners(store_env)
    try:
        make_history(app)
        task_id = app.submit("jon", URL, "subtitles").task_id
        app.begin_attempt(task_id, "w")
        app.fail(task_id, 1, "media_private", "private", retryable=False)
        app.retry_task("jon", task_id)
        wait_refunds_projected(app, live)  # refunds land, then their projection
        live_snapshot = live.views.snapshot()
        live_updates = {t["task_id"]: live.views.task_updates(UUID(t["task_id"])) for t in live_snapshot["tasks"]}
        _, new, _ = rebuild(store_env, app, grace_seconds=0)
    finally:
        live.stop()
    rebuilt = construct_views(store_env, new)
    try:
        assert rebuilt.snapshot() == live_snapshot
        assert {t: rebuilt.task_updates(UUID(t)) for t in live_updates} == live_updates
        assert rebuilt.max_tracking_id(app.name) == app.recorder.max_notification_id()
        assert any(t["refunded_credits"] for t in live_snapshot["tasks"])
    finally:
        rebuilt.datastore.close()
        app.close()


def test_an_interrupted_rebuild_resumes_from_its_last_commit(store_env: dict[str, str]) -> None:
    """Committed every 7 events and stopped after the first commit, `resume=` ends with the same rows."""
    from infrastructure.audit.history import RebuildInterrupted, rebuild
    from infrastructure.postgres.tables import construct_views

    app = MediaTasks(env=store_env)
    live = ProjectionRunners(store_env)
    try:
        make_history(app)
        wait_refunds_projected(app, live)  # refunds land, then their projection
        live_snapshot = live.views.snapshot()
        live_updates = {t["task_id"]: live.views.task_updates(UUID(t["task_id"])) for t in live_snapshot["tasks"]}

        def interrupt(position: int, head: int) -> None:
            if position > 7:
                raise KeyboardInterrupt

        try:
            rebuild(store_env, app, grace_seconds=0, page=5, commit_every=7, progress=interrupt)
        except RebuildInterrupted as stopped:
            interrupted = stopped
        else:
            raise AssertionError("the rebuild was not interrupted")
        assert 0 < interrupted.position < app.recorder.max_notification_id()
        _, new, _ = rebuild(store_env, app, grace_seconds=0, page=5, commit_every=7, resume=interrupted.name)
    finally:
        live.stop()
    assert new == interrupted.name
    rebuilt = construct_views(store_env, new)
    try:
        assert rebuilt.snapshot() == live_snapshot
        assert {t: rebuilt.task_updates(UUID(t)) for t in live_updates} == live_updates
        assert rebuilt.max_tracking_id(app.name) == app.recorder.max_notification_id()
    finally:
        rebuilt.datastore.close()
        app.close()
