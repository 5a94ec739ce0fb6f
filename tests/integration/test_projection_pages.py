"""The read model's follower applies the events of one pull as one page: one transaction, one tracking write."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.projection import ApplicationSubscription

from application.mediatasks import MediaTasks
from infrastructure.postgres import task_views
from infrastructure.postgres.tables import construct_views
from infrastructure.projection_followers import ProjectionFollower
from projections.task_views import TaskViewsProjection

URL = "https://www.tiktok.com/@fake/video/"


def follow_until(app: MediaTasks, views: Any, head: int) -> list[tuple[int, int]]:
    """Run the read model's follower until the view is at `head`; the pages it wrote (first, last)."""
    pages: list[tuple[int, int]] = []
    page = views.page

    @contextmanager
    def counted(first: Tracking, last: Tracking) -> Iterator[None]:
        with page(first, last):
            yield
        pages.append((first.notification_id, last.notification_id))

    views.page = counted
    source = MediaTasks(env={**app.env})
    stopping = threading.Event()
    follower = ProjectionFollower("read-model", source, lambda _: TaskViewsProjection(view=views))
    thread = threading.Thread(target=follower.run, args=(stopping,), daemon=True)
    thread.start()
    try:
        views.wait(app.name, head, timeout=20)
    finally:
        stopping.set()
        thread.join(10)
        source.close()
    return pages


def test_the_events_of_one_pull_are_one_page(app: MediaTasks, postgres_views: Any) -> None:
    views = postgres_views
    app.create_user("u", 100)
    tasks = [app.submit("u", URL + str(n), "subtitles").task_id for n in range(10)]
    head = app.recorder.max_notification_id()
    pages = follow_until(app, views, head)
    assert pages and pages[-1][1] == head
    assert len(pages) < head  # fewer transactions than events (the log was written before the follower read it)
    assert views.max_tracking_id(app.name) == head
    assert [views.get_task(t).status for t in tasks] == ["queued"] * 10
    account = views.get_account("u")
    assert account is not None and account.balance == 90
    charges = [e for e in views.ledger("u") if e.kind == "charge"]
    assert sorted(e.task_id for e in charges) == sorted(tasks)  # one entry per charge, each once
    assert [e.balance for e in sorted(charges, key=lambda e: e.position)] == list(range(99, 89, -1))
    assert all(len(views.task_updates(t)) == 1 for t in tasks)


def logged_events(app: MediaTasks, head: int) -> list[tuple[Any, Tracking]]:
    events = []
    with ApplicationSubscription(app, gt=None) as subscription:
        for domain_event, tracking in subscription:
            events.append((domain_event, tracking))
            if tracking.notification_id >= head:
                break
    return events


def test_a_page_a_rival_recorded_part_of_is_applied_event_by_event_each_once(
    app: MediaTasks, postgres_views: Any, store_env: dict[str, str]
) -> None:
    views = postgres_views
    app.create_user("u", 100)
    tasks = [app.submit("u", URL + str(n), "subtitles").task_id for n in range(6)]
    head = app.recorder.max_notification_id()
    events = logged_events(app, head)
    rival = construct_views(store_env)
    try:  # a rival runner (a standby taking over) applied the first half of the page already
        projection = TaskViewsProjection(view=rival)
        for domain_event, tracking in events[: len(events) // 2]:
            projection.process_event(domain_event, tracking)
    finally:
        rival.datastore.close()
    recorded = views.max_tracking_id(app.name)
    with pytest.raises(IntegrityError), views.page(events[0][1], events[-1][1]):
        pass  # the page's tracking write refuses positions recorded already: nothing of it is written
    assert views.max_tracking_id(app.name) == recorded
    ProjectionFollower._process_page(TaskViewsProjection(view=views), views.page, events)
    assert views.max_tracking_id(app.name) == head
    assert views.get_account("u").balance == 94
    charges = [e for e in views.ledger("u") if e.kind == "charge"]
    assert sorted(e.task_id for e in charges) == sorted(tasks)  # each once
    assert all(len(views.task_updates(t)) == 1 for t in tasks)


def test_a_page_writes_its_tasks_then_its_accounts_one_run_of_each_statement(
    app: MediaTasks, postgres_views: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    views = postgres_views
    for user in ("u", "v"):
        app.create_user(user, 100)
    opened = app.recorder.max_notification_id()
    tasks = [
        app.submit(user, URL + str(n) + str(i), "subtitles").task_id for n in range(5) for i, user in enumerate("uv")
    ]
    head = app.recorder.max_notification_id()
    events = logged_events(app, head)
    opening = [(e, t) for e, t in events if t.notification_id <= opened]
    submissions = [(e, t) for e, t in events if t.notification_id > opened]  # task, charge, task, charge, ...
    projection = TaskViewsProjection(view=views)
    ProjectionFollower._process_page(projection, views.page, opening)
    runs: list[int] = []
    execute = task_views._execute

    def counted(curs: Any, writes: list[Any]) -> None:
        runs.append(sum(1 for i, w in enumerate(writes) if i == 0 or writes[i - 1][0] is not w[0]))
        execute(curs, writes)

    monkeypatch.setattr(task_views, "_execute", counted)
    ProjectionFollower._process_page(projection, views.page, submissions)
    assert runs == [2]  # the ten tasks' rows in one run, the ten charges in one (not twenty runs of one)
    assert views.max_tracking_id(app.name) == head
    for user in ("u", "v"):
        account = views.get_account(user)
        assert account is not None and account.balance == 95
        charges = sorted((e for e in views.ledger(user) if e.kind == "charge"), key=lambda e: e.position)
        assert [e.balance for e in charges] == [99, 98, 97, 96, 95]  # each entry's balance after its own charge
    assert [views.get_task(t).status for t in tasks] == ["queued"] * 10
    assert all(len(views.task_updates(t)) == 1 for t in tasks)
