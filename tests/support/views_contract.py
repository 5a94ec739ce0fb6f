"""What every TaskViews must do (projections/task_views.py), written once: the memory and the
PostgreSQL read models both run it (tests/unit/test_views_contract.py, tests/integration/...).
A subclass provides the `views` fixture: an empty TaskViews."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import pytest
from eventsourcing.persistence import Tracking

from application.mediatasks import MediaTasks
from domain.vocabulary import TaskStatus
from projections.memory_views import MemoryTaskViews
from projections.task_views import TaskViewsProjection

URL = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


def history() -> tuple[MediaTasks, str, list[Any]]:
    """A POPO application with one user and three tasks in every state, and its events in order."""
    app = MediaTasks(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    user = f"u-{uuid4().hex[:8]}"
    app.create_user(user, 10)
    done = app.submit(user, URL, "subtitles", idempotency_key="done").task_id
    app.begin_attempt(done, "w")
    app.report_progress(done, 1, "metadata", 20)
    app.complete(done, 1, {"subtitles": []})
    failed = app.submit(user, URL, "video", idempotency_key="failed").task_id
    app.begin_attempt(failed, "w")
    app.fail(failed, 1, "media_private", "private", False, {})
    app.submit(user, URL, "video_and_subtitles", idempotency_key="queued")
    events = [(n.id, app.mapper.to_domain_event(n)) for n in app.recorder.select_notifications(start=1, limit=1000)]
    return app, user, events


def project(views: Any, app: MediaTasks, events: list[Any]) -> None:
    projection = TaskViewsProjection(view=views)
    for position, event in events:
        projection.process_event(event, Tracking(app.name, position))


class TaskViewsContract:
    @pytest.fixture
    def views(self) -> Any:
        raise NotImplementedError

    def test_tasks_accounts_and_ledger(self, views: Any) -> None:
        app, user, events = history()
        project(views, app, events)
        page = views.list_tasks(user, limit=20)
        assert [t.status for t in page.tasks] == [TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.EXTRACTED]
        assert page.next_cursor is None
        assert views.get_account(user).balance == 10 - 1 - 2 - 3  # no refund: the RefundIssuer is not running
        assert [t.task_id for t in views.list_tasks(user, status="failed").tasks] == [page.tasks[1].task_id]
        assert len(views.ledger(user)) == 4  # granted, three charges
        assert views.has_tracking_id(app.name, events[-1][0])

    def test_pages_follow_the_cursor(self, views: Any) -> None:
        app, user, events = history()
        project(views, app, events)
        first = views.list_tasks(user, limit=2)
        second = views.list_tasks(user, limit=2, cursor=first.next_cursor)
        assert len(first.tasks) == 2 and len(second.tasks) == 1 and second.next_cursor is None
        with pytest.raises(ValueError):
            views.list_tasks(user, cursor="not-a-cursor")

    def test_updates_after_a_position(self, views: Any) -> None:
        app, user, events = history()
        project(views, app, events)
        done = views.list_tasks(user).tasks[-1]
        updates = views.task_updates(done.task_id)
        assert [u.status for u in updates][-1] == TaskStatus.EXTRACTED
        assert views.task_updates(done.task_id, after=updates[-1].position) == []

    def test_reads_at_a_position_give_the_position_with_the_rows(self, views: Any) -> None:
        app, user, events = history()
        assert views.task_at_position(uuid4(), app.name) == (None, None)
        assert views.account_at_position(user, app.name) == (None, None, [])
        project(views, app, events[:3])
        position, account, entries = views.account_at_position(user, app.name)
        assert position == events[2][0] and account == views.get_account(user) and entries == views.ledger(user)
        project(views, app, events[3:])
        done = views.list_tasks(user).tasks[-1]
        assert views.task_at_position(done.task_id, app.name) == (events[-1][0], views.get_task(done.task_id))
        assert views.task_at_position(uuid4(), app.name) == (events[-1][0], None)
        position, account, entries = views.account_at_position(user, app.name, limit=2, before=events[-1][0])
        assert position == events[-1][0] and account is not None and account.balance == 10 - 1 - 2 - 3
        assert entries == views.ledger(user, limit=2, before=events[-1][0]) and len(entries) == 2
        assert views.account_at_position("nobody", app.name) == (events[-1][0], None, [])

    def test_the_same_history_makes_the_same_snapshot_as_memory(self, views: Any) -> None:
        app, _, events = history()
        project(views, app, events)
        memory = MemoryTaskViews()
        project(memory, app, events)
        assert views.snapshot() == memory.snapshot()


class MetadataCacheContract:
    """What every MetadataCache must do (application/ports/metadata_cache.py): the fake of the use-case
    suite and the PostgreSQL cache both run it."""

    @pytest.fixture
    def cache(self) -> Any:
        raise NotImplementedError

    def test_put_get_overwrite_invalidate(self, cache: Any) -> None:
        key = f"tiktok:{uuid4().hex}"
        assert cache.get(key) is None
        cache.put(key, {"title": "one"}, 60)
        assert cache.get(key) == {"title": "one"}
        cache.put(key, {"title": "two"}, 60)
        assert cache.get(key) == {"title": "two"}
        cache.invalidate(key)
        assert cache.get(key) is None
        cache.invalidate(key)  # a missing key is not an error
        assert cache.purge_expired() >= 0
