"""read_own_writes: one read when the view is already at the caller's last write, else that read polled
(bounded) until its position reaches the write: never the tracking position on its own."""

from __future__ import annotations

import threading
from typing import Any

import psycopg
from eventsourcing.persistence import Tracking

from application.mediatasks import MediaTasks
from infrastructure.postgres.own_writes import read_own_writes
from projections.task_views import TaskViewsProjection

URL = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


def project_all(views: Any, app: MediaTasks) -> None:
    projection = TaskViewsProjection(view=views)
    start = (views.max_tracking_id(app.name) or 0) + 1
    for n in app.recorder.select_notifications(start=start, limit=1000):
        projection.process_event(app.mapper.to_domain_event(n), Tracking(app.name, n.id))


def counted_reads(views: Any, app: MediaTasks, user_id: str) -> tuple[list[Any], Any]:
    reads: list[Any] = []

    def read() -> tuple[int | None, Any]:
        position, account, _ = views.account_at_position(user_id, app.name)
        reads.append(position)
        return position, account

    return reads, read


def test_a_view_at_the_last_write_answers_from_one_read(app: MediaTasks, postgres_views: Any) -> None:
    app.create_user("reader-1", 7)
    project_all(postgres_views, app)
    reads, read = counted_reads(postgres_views, app, "reader-1")
    account = read_own_writes(app, "reader-1", read)
    assert account is not None and account.balance == 7 and len(reads) == 1


def test_a_lagging_view_is_polled_by_its_own_read(app: MediaTasks, postgres_views: Any) -> None:
    app.create_user("reader-2", 7)
    project_all(postgres_views, app)
    app.grant_credits("reader-2", 5)  # the view has not seen this write
    reads, read = counted_reads(postgres_views, app, "reader-2")
    account = read_own_writes(app, "reader-2", read, timeout=0.2)
    assert account is not None and account.balance == 7  # polled 0.2 s, then answered from the view as it is
    assert len(reads) > 2 and len(set(reads)) == 1


def test_an_unknown_user_needs_no_wait(app: MediaTasks, postgres_views: Any) -> None:
    reads, read = counted_reads(postgres_views, app, "nobody")
    assert read_own_writes(app, "nobody", read) is None and reads == [None]


def test_the_wait_ends_when_the_view_reaches_the_write(app: MediaTasks, postgres_views: Any) -> None:
    app.create_user("reader-3", 7)
    project_all(postgres_views, app)
    app.grant_credits("reader-3", 5)
    reads, read = counted_reads(postgres_views, app, "reader-3")
    catching_up = threading.Timer(0.1, project_all, (postgres_views, app))
    catching_up.start()
    account = read_own_writes(app, "reader-3", read, timeout=3.0)
    catching_up.join()
    assert account is not None and account.balance == 12  # the answer of the read that saw the write
    assert reads[-1] > reads[0] and all(position == reads[0] for position in reads[:-1])


def test_the_wait_never_reads_the_tracking_position_alone(
    app: MediaTasks, postgres_views: Any, monkeypatch: Any
) -> None:
    app.create_user("reader-4", 7)
    project_all(postgres_views, app)
    app.grant_credits("reader-4", 5)
    max_tracking_id = postgres_views.max_tracking_id
    readers: list[int] = []

    def counted_max_tracking_id(name: str) -> int | None:
        readers.append(threading.get_ident())
        return max_tracking_id(name)

    monkeypatch.setattr(postgres_views, "max_tracking_id", counted_max_tracking_id)
    reads, read = counted_reads(postgres_views, app, "reader-4")
    catching_up = threading.Timer(0.1, project_all, (postgres_views, app))
    catching_up.start()
    account = read_own_writes(app, "reader-4", read, timeout=3.0)
    catching_up.join()
    assert account is not None and account.balance == 12
    # each poll is the combined read (position and rows from one snapshot); only the projecting thread asks
    assert threading.get_ident() not in readers and len(reads) > 1


def counted_statements(monkeypatch: Any) -> list[str]:
    """The statements this thread sends from now on (psycopg cursors' `execute`)."""
    statements: list[str] = []
    execute = psycopg.Cursor.execute
    thread = threading.get_ident()

    def counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == thread:
            statements.append(query if isinstance(query, str) else query.as_string(self))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)
    return statements


def test_a_read_at_a_position_is_one_statement(app: MediaTasks, postgres_views: Any, monkeypatch: Any) -> None:
    app.create_user("reader-5", 7)
    app.grant_credits("reader-5", 5)
    task_id = app.submit("reader-5", URL, "subtitles", idempotency_key="k").task_id
    project_all(postgres_views, app)
    account, entries = postgres_views.get_account("reader-5"), postgres_views.ledger("reader-5", limit=2)
    task = postgres_views.get_task(task_id)
    statements = counted_statements(monkeypatch)
    position = postgres_views.max_tracking_id(app.name)
    assert postgres_views.account_at_position("reader-5", app.name, limit=2) == (position, account, entries)
    assert postgres_views.task_at_position(task_id, app.name) == (position, task)
    assert len(statements) == 3  # the position on its own, then one statement for each read at it
    assert account is not None and account.balance == 11 and [e.kind for e in entries] == ["charge", "grant"]


def test_each_poll_of_a_lagging_view_is_one_statement(app: MediaTasks, postgres_views: Any, monkeypatch: Any) -> None:
    app.create_user("reader-6", 7)
    project_all(postgres_views, app)
    app.grant_credits("reader-6", 5)  # the view has not seen this write
    reads, read = counted_reads(postgres_views, app, "reader-6")
    statements = counted_statements(monkeypatch)
    account = read_own_writes(app, "reader-6", read, timeout=0.2)
    assert account is not None and account.balance == 7 and len(reads) > 2
    assert len(statements) == 1 + len(reads)  # the caller's last position, then one statement a poll
