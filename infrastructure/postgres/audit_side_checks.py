"""The read-model half of `verify`, run in a second process beside the replay.

The fold of every event into the read model (the projection's handlers, `clean_json`) and its
comparison with the live read model are the larger half of a verify's time and need none of the
replay's state: a child process imports the replay's own snapshot (`pg_export_snapshot`), so it
reads exactly the events the replay reads and the live read model as it stood at that moment,
decodes the events with the same `EventDecoder`, folds them with the same `TaskViewsProjection`
into a `TaskViewsBulkLoad` up to the read model's tracking position in that snapshot, and compares
(`read_model_differences`); the live read model is read on a second connection in the same snapshot,
in a thread, while it folds. It hands back the violations it found (events the fold could not
apply, rows that differ) and the live accounts (the parent compares their balances with the
replay's). The parent meanwhile reads the same events with the links: the chain and the invariants.
The child's first byte says it holds the snapshot: the parent's transaction may then end, and must
not wait idle for the result (PostgreSQL ends transactions idle too long).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import JSONTranscoder, Mapper
from psycopg.sql import SQL, Identifier, Literal

from application.audit import HistoryAuditor, Violation
from infrastructure.postgres.audit_seal import ExportedSnapshot, open_event_cursor, paged
from infrastructure.postgres.event_decoder import EventDecoder
from infrastructure.postgres.task_views import (
    FoldPosition,
    TaskViewsBulkLoad,
    read_model_differences,
    read_snapshot,
    view_tables,
)
from projections.task_views import TaskViewsProjection

IMPORTED = b"+"  # the child's first byte: it holds the snapshot


@dataclass
class SideResult:
    views_at: int  # the read model's tracking position in the snapshot: the fold went to it
    violations: list[Violation]  # what the fold and the comparison found, in the order they named it
    accounts: list[dict[str, Any]]  # the live read model's accounts, as `snapshot()` gives them


class SideChecks:
    """`start` the fold and the read-model comparison; `result()` before the snapshot closes.

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

    def result(self) -> SideResult:
        assert self._process.stdout is not None
        with self._process.stdout:
            output = self._process.stdout.read()
        if self._process.wait() != 0:
            self._failed()
        return pickle.loads(output)

    def stop(self) -> None:
        """End the child (the verify it serves failed)."""
        self._process.kill()
        self._process.wait()

    def _failed(self) -> None:
        self._process.kill()
        raise RuntimeError(f"the read-model fold and comparison failed (exit {self._process.wait()})")


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


def _side_checks(exported: tuple[Any, ...], model: tuple[str, str, str, str], transcodings: list[Any]) -> SideResult:
    conninfo, snapshot_id, events_table, after, head = exported
    schema, prefix, tracking_table, name = model
    transcoder = JSONTranscoder()
    for transcoding in transcodings:
        transcoder.register(transcoding)
    findings = HistoryAuditor()  # names the events the fold cannot apply as the one-process verify does
    fold = TaskViewsBulkLoad(None, keep_updates=False)
    process = TaskViewsProjection(view=fold).dispatcher()
    with _importing(conninfo, snapshot_id) as conn, _importing(conninfo, snapshot_id) as model_conn:
        views_at = _tracked(conn, schema, tracking_table, name)
        live_rows: Future[dict[str, Any]] = Future()  # built by PostgreSQL while this process folds

        def read_live() -> None:
            try:
                live_rows.set_result(read_snapshot(model_conn, view_tables(schema, prefix)))
            except BaseException as error:  # noqa: BLE001 - raised where the result is wanted
                live_rows.set_exception(error)

        threading.Thread(target=read_live, name="live-read-model", daemon=True).start()
        sys.stdout.buffer.write(IMPORTED)  # both connections hold the snapshot
        sys.stdout.buffer.flush()
        events = open_event_cursor(
            conn, SQL("{}.{}").format(*map(Identifier, events_table)), after, min(head, views_at)
        )
        decoded = EventDecoder(Mapper(transcoder)).events(paged(events), lambda position, error: None)
        tracking = FoldPosition(name)
        for position, event in decoded:  # an event that does not decode is the replay's to name
            tracking.notification_id = position
            try:
                process(event, tracking)
            except Exception as e:  # noqa: BLE001 - a forged state: named, and the fold goes on
                findings.unreadable(position, e)
        events.close()
        live = live_rows.result()
    for message in read_model_differences(fold, live):
        findings.violation("read_model_differs", message)
    return SideResult(views_at, findings.report.violations, live["accounts"])


if __name__ == "__main__":  # the child: its classes pickled under the module's name, not __main__'s
    from infrastructure.postgres import audit_side_checks

    result = audit_side_checks._side_checks(*pickle.loads(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(pickle.dumps(result))
