"""Group commit under load: conflicts stay with their callers, readers never skip, kill -9 is atomic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, StoredEvent
from eventsourcing.utils import Environment
from psycopg.sql import SQL, Identifier

from infrastructure.postgres.event_store import GroupCommitApplicationRecorder, MediaTasksPostgresFactory
from tests.support.postgres import database_url

CALLERS = 100
CONFLICTING = 10


@pytest.fixture
def recorder(store_env: dict[str, str]) -> Iterator[GroupCommitApplicationRecorder]:
    factory = MediaTasksPostgresFactory(Environment("MediaTasks", {**store_env, "GROUP_COMMIT": "on"}))
    r = factory.application_recorder()
    assert isinstance(r, GroupCommitApplicationRecorder)
    yield r
    factory.close()


def _connect(store_env: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(database_url(store_env), autocommit=True)


def _rows_by_notification_id(store_env: dict[str, str], after: int) -> list[tuple[int, int, uuid.UUID]]:
    """(notification_id, xmin, originator_id) of the rows written after a position, in id order."""
    with _connect(store_env) as conn:
        return conn.execute(
            SQL(
                "SELECT notification_id, xmin::text::bigint, originator_id FROM {}.mediatasks_events "
                "WHERE notification_id > %s ORDER BY notification_id"
            ).format(Identifier(store_env["POSTGRES_SCHEMA"])),
            (after,),
        ).fetchall()


def test_a_hundred_concurrent_inserts_ten_conflicting(
    store_env: dict[str, str], recorder: GroupCommitApplicationRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = [uuid.uuid4() for _ in range(CONFLICTING)]
    for originator_id in existing:
        recorder.insert_events([StoredEvent(originator_id, 1, "first", b"kept")])
    start = recorder.max_notification_id() or 0

    fresh = [uuid.uuid4() for _ in range(CALLERS - CONFLICTING)]
    callers = fresh + existing
    outcomes: dict[uuid.UUID, list[int] | BaseException] = {}
    barrier = threading.Barrier(CALLERS)

    def insert(originator_id: uuid.UUID) -> None:
        events = [StoredEvent(originator_id, v, "second", b"new") for v in (1, 2)]
        barrier.wait()
        try:
            outcomes[originator_id] = list(recorder.insert_events(events) or [])
        except IntegrityError as error:
            outcomes[originator_id] = error

    seen: list[int] = []
    writers_done = threading.Event()

    def read_continuously() -> None:
        position = start
        while True:
            finished = writers_done.is_set()
            page = recorder.select_notifications(position, limit=20, inclusive_of_start=False)
            seen.extend(n.id for n in page)
            if page:
                position = page[-1].id
            elif finished:
                return

    writer = recorder.group_commit_writer
    rolled_back: list[BaseException] = []  # a shared transaction's error: it was rolled back
    write_together = writer._write_together

    def recorded(conn: Any, batch: list[Any]) -> BaseException | None:
        error = write_together(conn, batch)
        if error is not None and len(batch) > 1:  # a caller alone gets its own error: nothing to write again
            rolled_back.append(error)
        return error

    monkeypatch.setattr(writer, "_write_together", recorded)
    reader = threading.Thread(target=read_continuously)
    reader.start()
    threads = [threading.Thread(target=insert, args=(c,)) for c in callers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writers_done.set()
    reader.join()

    failed = {c for c, outcome in outcomes.items() if isinstance(outcome, BaseException)}
    assert failed == set(existing)
    for originator_id in existing:
        assert [(e.originator_version, e.state) for e in recorder.select_events(originator_id)] == [(1, b"kept")]

    rows = _rows_by_notification_id(store_env, start)
    returned = sorted(i for c in fresh for i in outcomes[c])  # type: ignore[union-attr]
    assert [r[0] for r in rows] == returned
    for originator_id in fresh:
        ids = outcomes[originator_id]
        assert isinstance(ids, list) and len(ids) == 2 and ids[1] == ids[0] + 1
        assert [e.originator_version for e in recorder.select_events(originator_id)] == [1, 2]

    # xmin is the (sub)transaction that wrote a row: a caller under a SAVEPOINT has its own
    writers = [r[1] for r in rows]
    runs = [x for i, x in enumerate(writers) if i == 0 or writers[i - 1] != x]
    assert len(runs) == len(set(runs)), "one writer's ids are interleaved with another's"
    assert runs == sorted(runs), "ids are not in the order the writers took the table lock"
    assert writer.inserts == CONFLICTING + CALLERS
    assert writer.batches < CONFLICTING + CALLERS - 10, "the concurrent inserts did not share transactions"
    # inside a shared transaction a conflict with a stored version is found under the table lock by the
    # INSERT itself: the conflicting callers are left out, nothing is rolled back and written again
    assert writer.refused_by_check >= 1, "no conflict happened inside a shared transaction"
    assert writer.savepoint_batches == 0, "a shared transaction was rolled back for a stored version"
    assert not rolled_back, f"{len(rolled_back)} shared transaction(s) rolled back and written again"

    assert seen == [r[0] for r in rows], "the reader skipped an id that appeared later"


def test_sequential_inserts_each_commit_alone_with_increasing_ids(recorder: GroupCommitApplicationRecorder) -> None:
    writer = recorder.group_commit_writer
    ids = [recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "alone", b"x")]) for _ in range(20)]
    assert writer.batches == writer.inserts == 20
    assert [i for group in ids for i in group or []] == sorted({i for group in ids for i in group or []})


def _counts(store_env: dict[str, str], ids: set[str]) -> dict[str, int]:
    with _connect(store_env) as conn:
        rows = conn.execute(
            SQL(
                "SELECT originator_id::text, count(*) FROM {}.mediatasks_events "
                "WHERE originator_id::text = ANY(%s) GROUP BY originator_id"
            ).format(Identifier(store_env["POSTGRES_SCHEMA"])),
            (list(ids),),
        ).fetchall()
    return dict(rows)


def _kill_mid_batch(store_env: dict[str, str], round_: int) -> tuple[set[str], set[str]]:
    """Run the load process, SIGKILL it after some hundred inserts; the ids it tried and those it was told succeeded."""
    env = {**store_env, "GROUP_COMMIT": "on"}
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.group_commit_load", json.dumps(env), "32"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    tried: set[str] = set()
    succeeded: set[str] = set()
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while len(succeeded) < 300 + 97 * round_ and time.monotonic() < deadline:
        word, _, originator_id = process.stdout.readline().strip().partition(" ")
        (succeeded if word == "ok" else tried).add(originator_id)
    process.send_signal(signal.SIGKILL)
    rest, _ = process.communicate(timeout=30)
    for line in rest.splitlines():
        word, _, originator_id = line.partition(" ")
        (succeeded if word == "ok" else tried).add(originator_id)
    return tried, succeeded


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_mid_batch_leaves_no_caller_half_written(store_env: dict[str, str], round_: int) -> None:
    unwritten = 0
    for _attempt in range(3):  # the kill can land when every insert in flight has just committed: kill again
        tried, succeeded = _kill_mid_batch(store_env, round_)
        assert len(succeeded) >= 300
        in_flight = tried - succeeded
        counts = _counts(store_env, tried)
        assert all(counts.get(c) == 3 for c in succeeded), "a caller told of success is not (fully) in the store"
        assert all(counts.get(c, 0) in (0, 3) for c in in_flight), "a caller's insert is partly in the store"
        unwritten = sum(1 for c in in_flight if counts.get(c, 0) == 0)
        if unwritten:
            break
    assert unwritten, "in three kills, nothing was in flight when the writer was killed"


def test_a_caller_that_finds_nobody_writing_writes_its_insert_on_its_own_thread(
    recorder: GroupCommitApplicationRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = recorder.group_commit_writer
    writing_threads: list[threading.Thread] = []
    write_batch = writer._write_batch

    def recorded(batch: list[Any]) -> None:
        writing_threads.append(threading.current_thread())
        write_batch(batch)

    monkeypatch.setattr(writer, "_write_batch", recorded)
    recorder.insert_events([StoredEvent(uuid.uuid4(), 1, "alone", b"x")])
    assert writing_threads == [threading.current_thread()]  # no hand-over to another thread and back
    assert not writer.writing


def test_callers_that_come_while_one_writes_wait_and_the_next_leads_their_shared_transaction(
    recorder: GroupCommitApplicationRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = recorder.group_commit_writer
    first_batch_started, release_first_batch = threading.Event(), threading.Event()
    writing_threads: list[threading.Thread] = []
    write_batch = writer._write_batch

    def held_first(batch: list[Any]) -> None:
        writing_threads.append(threading.current_thread())
        if len(writing_threads) == 1:
            first_batch_started.set()
            assert release_first_batch.wait(10)
        write_batch(batch)

    monkeypatch.setattr(writer, "_write_batch", held_first)
    outcomes: dict[uuid.UUID, Any] = {}

    def insert(originator_id: uuid.UUID) -> None:
        outcomes[originator_id] = recorder.insert_events([StoredEvent(originator_id, 1, "queued", b"x")])

    leader = threading.Thread(target=insert, args=(uuid.uuid4(),))
    leader.start()
    assert first_batch_started.wait(10)
    followers = [threading.Thread(target=insert, args=(uuid.uuid4(),)) for _ in range(10)]
    for t in followers:
        t.start()
    deadline = time.monotonic() + 10
    while len(writer._queue) < len(followers):  # all queued behind the leader's transaction
        assert time.monotonic() < deadline, "the callers did not queue while the leader wrote"
        time.sleep(0.01)
    batches = writer.batches
    release_first_batch.set()
    for t in [leader, *followers]:
        t.join(10)
    assert writer.batches == batches + 2  # the leader's, then the ten waiting ones together
    assert writing_threads[0] is not writing_threads[1] and writing_threads[1] in followers
    assert all(ids and len(ids) == 1 for ids in outcomes.values()) and len(outcomes) == 11
    assert not writer.writing


def test_groups_share_a_transaction_each_with_its_own_outcome_the_taken_versions_left_out(
    recorder: GroupCommitApplicationRecorder,
) -> None:
    taken = [uuid.uuid4() for _ in range(2)]
    for originator_id in taken:
        recorder.insert_events([StoredEvent(originator_id, 1, "first", b"kept")])
    writer = recorder.group_commit_writer

    def insert_groups() -> list[uuid.UUID]:
        fresh = [uuid.uuid4() for _ in range(3)]
        groups = [[StoredEvent(f, v, "new", b"new") for v in (1, 2)] for f in fresh]
        groups += [[StoredEvent(t, 1, "new", b"new")] for t in taken]
        batches = writer.batches
        outcomes = recorder.insert_events_each(groups)
        assert writer.batches == batches + 1  # one transaction for all the groups
        assert [isinstance(o, IntegrityError) for o in outcomes] == [False, False, False, True, True]
        for ids in outcomes[:3]:
            assert isinstance(ids, list) and len(ids) == 2 and ids[1] == ids[0] + 1
        return fresh

    # every time (no conflict needed first): the taken versions found by the INSERT, nothing rolled back
    written = insert_groups()
    assert (writer.savepoint_batches, writer.refused_by_check) == (0, 2)
    written += insert_groups()
    assert (writer.savepoint_batches, writer.refused_by_check) == (0, 4)
    for originator_id in taken:
        assert [(e.originator_version, e.state) for e in recorder.select_events(originator_id)] == [(1, b"kept")]
    for originator_id in written:
        assert [e.originator_version for e in recorder.select_events(originator_id)] == [1, 2]


def test_two_groups_of_one_batch_with_one_version_are_told_apart_under_savepoints(
    recorder: GroupCommitApplicationRecorder,
) -> None:
    writer = recorder.group_commit_writer
    twice, fresh = uuid.uuid4(), uuid.uuid4()
    groups = [[StoredEvent(twice, 1, "new", b"first")], [StoredEvent(fresh, 1, "new", b"x")]]
    groups.append([StoredEvent(twice, 1, "new", b"second")])  # the lookup sees only stored versions
    outcomes = recorder.insert_events_each(groups)
    assert [isinstance(o, IntegrityError) for o in outcomes] == [False, False, True]
    assert (writer.savepoint_batches, writer.refused_by_check) == (1, 0)
    assert [e.state for e in recorder.select_events(twice)] == [b"first"]
    assert [e.state for e in recorder.select_events(fresh)] == [b"x"]
