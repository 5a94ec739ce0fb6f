"""Half of `verify`'s work, run in a second process beside the replay, on the same snapshot.

A task's checks and its read-model rows depend on its own events and on the refunds that name it,
nothing else; an account's on its own events. So the work is split by aggregate: this child takes
the tasks (and every other non-account aggregate) whose id falls in its shares (`share`: the last
byte of the id modulo 4, the child shares 1 to 3), the first process the accounts and the tasks of
share 0, and each event is decoded once. The child imports the replay's snapshot
(`pg_export_snapshot`), reads its events (and every account `Refunded`, which marks its task's
`refunded_credits`) with the same `EventDecoder`, runs the task checks of the same `HistoryAuditor`
and folds them with the same `TaskViewsProjection` into a `TaskViewsBulkLoad` up to the read model's
tracking position in that snapshot, and compares its tasks with the live ones of its shares, read on
a second connection in the same snapshot while it folds. It hands back, in two messages on its
stdout, its tasks' audit state as soon as its fold ends (ids as bytes, fields as tuples: they
unpickle without a call per object), which the first process merges into its own and runs
`finish()` on (the cross checks of charges and tasks) while the child compares its rows; then what
it found (events that do not decode or do not apply, rows that differ, task-check violations). The
first process meanwhile checks the chain over every event, decodes only its own, and compares its
own rows while it waits. Both hold off full garbage collections (infrastructure/collector.py).

The refunds it folds are the first process's to name when they fail (it folds them too, with the
same code: a refund's failure raises before its task is marked in either fold, for any JSON value).
The child's first byte says it holds the snapshot: the parent's transaction may then end, and must
not wait idle for the result (PostgreSQL ends transactions idle too long).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing.persistence import JSONTranscoder, Mapper
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal

from application.audit import ACCOUNT_EVENTS, HistoryAuditor, TaskStates, Violation
from domain.credits import CreditAccount
from infrastructure.collector import full_collections_held
from infrastructure.postgres.audit_seal import ExportedSnapshot, open_event_cursor, paged
from infrastructure.postgres.event_decoder import EventDecoder
from infrastructure.postgres.task_views import (
    TaskViewsBulkLoad,
    folded,
    read_model_differences,
    read_snapshot,
    view_tables,
)
from projections.task_views import TaskViewsProjection

IMPORTED = b"+"  # the child's first byte: it holds the snapshot
SHARES = 4
CHILD_SHARES = (1, 2, 3)  # the child's part of the tasks: three quarters (the first process also checks the chain)
PARENT_SHARES = (0,)


def share(aggregate_id: UUID) -> int:
    """Which process checks and folds an aggregate's events: `SQL_SHARE` in Python."""
    return (aggregate_id.int & 0xFF) % SHARES


def _sql_share(column: str) -> Composed:
    return SQL("mod(get_byte(uuid_send({}), 15), {})").format(Identifier(column), Literal(SHARES))


def tasks_of(shares: tuple[int, ...]) -> dict[str, Composed]:
    """`read_snapshot`'s condition for the tasks of these shares."""
    return {"tasks": SQL("{} = ANY({})").format(_sql_share("task_id"), Literal(list(shares)))}


@dataclass
class SideResult:
    views_at: int  # the read model's tracking position in the snapshot: the fold went to it
    violations: list[Violation]  # what the checks, the fold and the comparison found, in the order they named it


class SideChecks:
    """`start` the child's part (above); `result()` before the snapshot closes.

    The child is `python -m infrastructure.postgres.audit_side_checks` (arguments and result pickled
    through its stdin and stdout), so no caller needs multiprocessing's main-module guard."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls, snapshot: ExportedSnapshot, views: Any, application_name: str, mapper: Any) -> SideChecks:
        exported = (snapshot.conninfo, snapshot.snapshot_id, snapshot.events_table, snapshot.after, snapshot.head)
        model = (views.datastore.schema, views.prefix, views.tracking_table_name, application_name)
        transcodings = list(mapper.transcoder.names.values())  # the mapper itself does not pickle
        arguments = pickle.dumps((exported, model, transcodings))
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(arguments)
        return cls(process)

    def imported(self) -> None:
        """Wait until the child holds the snapshot: from then on the exporting transaction may end (it must
        not sit idle in its transaction while the child works: PostgreSQL ends idle transactions)."""
        assert self._process.stdout is not None
        if self._process.stdout.read(1) != IMPORTED:
            self._failed()

    def task_states(self) -> TaskStates:
        """The child's task checks' state (`HistoryAuditor.task_states()`), handed over when its fold ends,
        before its comparison: merge it and finish the audit while the child compares."""
        return self._message()

    def result(self) -> SideResult:
        """What the child found (after `task_states()`)."""
        assert self._process.stdout is not None
        with self._process.stdout:
            found = self._message()
        if self._process.wait() != 0:
            self._failed()
        return found

    def _message(self) -> Any:
        assert self._process.stdout is not None
        size = self._process.stdout.read(8)
        length = int.from_bytes(size, "big") if len(size) == 8 else 0
        data = self._process.stdout.read(length) if length else b""
        if not data or len(data) != length:  # the child ended before writing it, or part of it
            self._failed()
        return pickle.loads(data)

    def stop(self) -> None:
        """End the child (the verify it serves failed)."""
        self._process.kill()
        self._process.wait()

    def _failed(self) -> None:
        self._process.kill()
        raise RuntimeError(f"the second process's checks failed (exit {self._process.wait()})")


def usable(mapper: Any) -> bool:
    """Whether the child can decode as `mapper` does (a plain JSON mapper: no cipher, no compressor)."""
    return (
        type(mapper) is Mapper
        and type(mapper.transcoder) is JSONTranscoder
        and mapper.cipher is None
        and mapper.compressor is None
    )


def tracked_in_snapshot(connection: Any, views: Any, application_name: str) -> int:
    """The read model's tracking position in the snapshot `connection` reads (0 before its first event)."""
    return _tracked(connection, views.datastore.schema, views.tracking_table_name, application_name)


def _tracked(connection: Any, schema: str, tracking_table: str, application_name: str) -> int:
    table = SQL("{}.{}").format(Identifier(schema), Identifier(tracking_table))
    with connection.cursor() as curs:
        curs.execute(
            SQL("SELECT max(notification_id) FROM {} WHERE application_name = %s").format(table), (application_name,)
        )
        row = curs.fetchone()
    value = (list(row.values()) if isinstance(row, dict) else list(row))[0] if row else None
    return value or 0


@contextmanager
def _importing(conninfo: str, snapshot_id: str) -> Iterator[Any]:
    """A read-only connection in the exported snapshot (imported by its first statement)."""
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute(SQL("SET TRANSACTION SNAPSHOT {}").format(Literal(snapshot_id)))
        yield conn


class ParentShare:
    """The first process's part: which rows it decodes (`rows`), and its live rows (accounts, ledger, the
    tasks of its share) read in the exported snapshot in a thread on a connection of its own, while the
    replay runs (PostgreSQL builds their JSON on another core). `imported()` before that transaction ends."""

    def __init__(self, snapshot: ExportedSnapshot, views: Any, decoder: EventDecoder) -> None:
        self.decoder = decoder
        self.skipped = 0  # the rows left to the child
        self._kinds: dict[str, bool] = {}  # topic → whether it names an account event
        self._imported: Future[None] = Future()
        self._rows: Future[dict[str, Any]] = Future()
        tables = view_tables(views.datastore.schema, views.prefix)
        threading.Thread(
            target=self._read, args=(snapshot.conninfo, snapshot.snapshot_id, tables), name="live-rows", daemon=True
        ).start()

    def decodes(self, row: tuple[Any, ...]) -> bool:
        """Whether this process decodes the row: an account event, or another event of share 0 (else it
        counts it as left to the child)."""
        is_account = self._kinds.get(row[3])
        if is_account is None:
            is_account = self._account(row[3])
        if is_account or type(row[1]) is not UUID or (row[1].int & 0xFF) % SHARES == 0:
            return True
        self.skipped += 1
        return False

    def _account(self, topic: str) -> bool:
        cls = self.decoder.event_class(topic)
        self._kinds[topic] = kind = cls is not None and issubclass(cls, ACCOUNT_EVENTS)
        return kind

    def imported(self) -> None:
        self._imported.result()

    def live(self) -> dict[str, Any]:
        return self._rows.result()

    def _read(self, conninfo: str, snapshot_id: str, tables: dict[str, Any]) -> None:
        try:
            with _importing(conninfo, snapshot_id) as conn:
                self._imported.set_result(None)
                self._rows.set_result(read_snapshot(conn, tables, where=tasks_of(PARENT_SHARES)))
        except BaseException as error:  # noqa: BLE001 - raised where the result is wanted
            for future in (self._imported, self._rows):
                if not future.done():
                    future.set_exception(error)


def _topics(conn: Any, events_table: Composed, decoder: EventDecoder) -> tuple[list[str], list[str]]:
    """The topics of the snapshot's events that name a refund (which marks its task), and those that name
    another account event (none of which touches a task)."""
    refunds, others = [], []
    with conn.cursor(row_factory=tuple_row) as curs:
        for (topic,) in curs.execute(SQL("SELECT DISTINCT topic FROM {}").format(events_table)):
            cls = decoder.event_class(topic)
            if cls is not None and issubclass(cls, CreditAccount.Refunded):
                refunds.append(topic)
            elif cls is not None and issubclass(cls, ACCOUNT_EVENTS):
                others.append(topic)
    return refunds, others


@full_collections_held()
def _side_checks(
    exported: tuple[Any, ...],
    model: tuple[str, str, str, str],
    transcodings: list[Any],
    hand_over: Callable[[TaskStates], None],
) -> SideResult:
    """The child's work (above); `hand_over` gets its task checks' state as soon as its fold ends, before
    the comparison (whose result's violations include the fold's)."""
    conninfo, snapshot_id, events_table, after, head = exported
    schema, prefix, tracking_table, name = model
    transcoder = JSONTranscoder()
    for transcoding in transcodings:
        transcoder.register(transcoding)
    auditor = HistoryAuditor()  # its task checks only: the first process finishes the audit
    fold = TaskViewsBulkLoad(None, keep_updates=False)
    process = TaskViewsProjection(view=fold).dispatcher()
    decoder = EventDecoder(Mapper(transcoder))
    table = SQL("{}.{}").format(*map(Identifier, events_table))
    with _importing(conninfo, snapshot_id) as conn, _importing(conninfo, snapshot_id) as model_conn:
        views_at = _tracked(conn, schema, tracking_table, name)
        live_rows: Future[dict[str, Any]] = Future()  # built by PostgreSQL while this process folds

        def read_live() -> None:
            try:
                rows = read_snapshot(model_conn, view_tables(schema, prefix), ("tasks",), tasks_of(CHILD_SHARES))
                live_rows.set_result(rows)
            except BaseException as error:  # noqa: BLE001 - raised where the result is wanted
                live_rows.set_exception(error)

        threading.Thread(target=read_live, name="live-read-model", daemon=True).start()
        sys.stdout.buffer.write(IMPORTED)  # both connections hold the snapshot
        sys.stdout.buffer.flush()
        refund_topics, other_account_topics = _topics(conn, table, decoder)
        condition = SQL("{} = ANY(%s) AND NOT topic = ANY(%s) OR topic = ANY(%s)").format(_sql_share("originator_id"))
        events = open_event_cursor(
            conn, table, after, head, (condition, (list(CHILD_SHARES), other_account_topics, refund_topics))
        )
        current_topic = [""]

        def noted(rows: Iterable[tuple[Any, ...]]) -> Iterator[tuple[Any, ...]]:
            for row in rows:
                current_topic[0] = row[3]
                yield row

        def undecodable(position: int, error: Exception) -> None:
            cls = decoder.event_class(current_topic[0])
            if cls is None or not issubclass(cls, ACCOUNT_EVENTS):  # a refund's is the first process's to name
                auditor.unreadable(position, error)

        def unapplied(position: int, event: Any, error: Exception) -> None:
            if not isinstance(event, ACCOUNT_EVENTS):  # those the first process folds too, and names
                auditor.unreadable(position, error)

        rows = paged(events)
        try:
            decoded = decoder.events(noted(rows), undecodable)
            auditor.feed_all(folded(decoded, process, name, views_at, unapplied), checks="tasks")
        finally:
            rows.close()
            events.close()
        hand_over(auditor.task_states())  # the first process merges them and finishes while this compares
        live = live_rows.result()
    for message in read_model_differences(fold, live, ("tasks",)):
        auditor.violation("read_model_differs", message)
    return SideResult(views_at, auditor.report.violations)


def _send(message: Any) -> None:
    """One message to the first process: its pickle's length (8 bytes), then the pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sys.stdout.buffer.write(len(data).to_bytes(8, "big") + data)
    sys.stdout.buffer.flush()


if __name__ == "__main__":  # the child: its classes pickled under the module's name, not __main__'s
    from infrastructure.postgres import audit_side_checks

    arguments = pickle.loads(sys.stdin.buffer.read())
    audit_side_checks._send(audit_side_checks._side_checks(*arguments, audit_side_checks._send))
