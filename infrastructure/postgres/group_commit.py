"""Group commit for eventsourcing's PostgreSQL recorders.

eventsourcing serialises inserts with `LOCK TABLE … IN EXCLUSIVE MODE` so that notification ids
are issued in commit order (readers never pass a gap that is filled later). One insert per
transaction then means one commit, one fsync, one lock hand-over per caller. Here every
`insert_events` call is handed to one writer thread per recorder, which takes the callers waiting
at that moment (never waiting for more) and writes them in ONE transaction: one lock, one NOTIFY,
one commit. Each caller still gets exactly its own outcome:

- first, all callers' rows go in together (lock and NOTIFY in one round trip, then one INSERT);
- if that fails with an error that belongs to a caller (a duplicate version, a tracking position
  already recorded, bad data), the transaction is rolled back and the batch is written again with
  each caller under its own SAVEPOINT: the callers that conflict get their own error and nothing of
  theirs is written; the rest commit together;
- a connection-level error fails the whole batch, as it would have failed each caller alone, and
  eventsourcing's retry decorator resubmits.

A shared transaction of several callers (without tracking records) inserts in one statement only the
callers none of whose (originator_id, version) pairs are taken, looked up under the table lock: a
caller whose version another process took gets its IntegrityError at once, the rest are inserted,
instead of the whole transaction rolled back and written again under savepoints (which stay for the
conflicts that lookup cannot see: two callers of one batch with one version, tracking records). The
lookup is part of the INSERT, so the table lock is held no longer for it. `insert_events_each` hands
several groups of events (one caller each) to the writer at once: one transaction, one outcome per group.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from eventsourcing import persistence
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

DEFAULT_MAX_BATCH_EVENTS = 500

_ERROR_CLASSES: tuple[tuple[type[psycopg.Error], type[persistence.PersistenceError]], ...] = (
    (psycopg.InterfaceError, persistence.InterfaceError),
    (psycopg.OperationalError, persistence.OperationalError),
    (psycopg.DataError, persistence.DataError),
    (psycopg.IntegrityError, persistence.IntegrityError),
    (psycopg.InternalError, persistence.InternalError),
    (psycopg.ProgrammingError, persistence.ProgrammingError),
    (psycopg.NotSupportedError, persistence.NotSupportedError),
    (psycopg.DatabaseError, persistence.DatabaseError),
)


def persistence_error(error: BaseException) -> BaseException:
    """The eventsourcing error a caller would have seen for this psycopg error (as its datastore maps them)."""
    if isinstance(error, psycopg.Error):
        for psycopg_class, persistence_class in _ERROR_CLASSES:
            if isinstance(error, psycopg_class):
                converted = persistence_class(str(error))
                break
        else:
            converted = persistence.PersistenceError(str(error))
        converted.__cause__ = error
        return converted
    return error


def _is_connection_error(error: BaseException) -> bool:
    return isinstance(
        error,
        (psycopg.OperationalError, psycopg.InterfaceError, persistence.OperationalError, persistence.InterfaceError),
    )


def events_table_statement(recorder: Any, template: str) -> bytes:
    """A statement on the recorder's events table ({schema}, {table}, {id_type}), rendered once (not at each execute)."""
    return (
        SQL(template)  # type: ignore[arg-type]  # a template of this module's constants
        .format(
            schema=Identifier(recorder.datastore.schema),
            table=Identifier(recorder.events_table_name),
            id_type=Identifier(recorder.datastore.originator_id_type),
        )
        .as_bytes(None)
    )


@dataclass(eq=False)
class PendingInsert:
    """One caller's insert, waiting for the writer."""

    stored_events: Sequence[StoredEvent]
    kwargs: dict[str, Any]
    done: bool = False  # answered: set by the caller that wrote it, read by the waiting one after a notify
    notification_ids: list[int] | None = None
    error: BaseException | None = None

    def succeed(self, notification_ids: list[int]) -> None:
        self.notification_ids = notification_ids
        self.done = True

    def fail(self, error: BaseException) -> None:
        self.error = persistence_error(error)
        self.done = True


class GroupCommitWriter:
    """Writes the inserts of many callers of one recorder in shared transactions, on the callers' threads."""

    def __init__(self, recorder: PostgresApplicationRecorder, max_batch_events: int) -> None:
        self._recorder = recorder
        self._max_batch_events = max(1, max_batch_events)
        self._queue: deque[PendingInsert] = deque()
        self._wakeup = threading.Condition()
        self._writing = False  # a caller (the leader) is writing batches now
        self._pid = os.getpid()
        self._insert_statement = events_table_statement(
            recorder,
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[]) "
            "RETURNING notification_id",
        )
        # eventsourcing's lock statements and its NOTIFY, sent as one simple query (one round trip)
        self._lock_and_notify = (
            SQL("; ")
            .join([*recorder.lock_table_statements, SQL("NOTIFY {0}").format(Identifier(recorder.channel_name))])
            .as_bytes(None)
        )
        # the rows of the callers none of whose versions are taken, inserted; then the callers refused
        self._insert_untaken_statement = events_table_statement(
            recorder,
            "WITH w AS (SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[], %b::int[]) "
            "WITH ORDINALITY AS w(originator_id, originator_version, topic, state, caller, n)), "
            "refused AS (SELECT DISTINCT w.caller FROM w JOIN {schema}.{table} e "
            "USING (originator_id, originator_version)), "
            "inserted AS (INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT originator_id, originator_version, topic, state FROM w "
            "WHERE caller NOT IN (SELECT caller FROM refused) ORDER BY n RETURNING notification_id) "
            "SELECT notification_id, NULL::int AS caller FROM inserted UNION ALL SELECT NULL, caller FROM refused",
        )
        self.batches = 0
        self.inserts = 0
        self.savepoint_batches = 0
        self.refused_by_check = 0

    def write(self, pending: PendingInsert) -> list[int]:
        """Queue one caller's insert and wait until its transaction has committed or it failed."""
        self._write_queued([pending])
        if pending.error is not None:
            raise pending.error
        assert pending.notification_ids is not None
        return pending.notification_ids

    def write_each(self, pendings: Sequence[PendingInsert]) -> None:
        """Queue several inserts at once (they share a transaction unless it would exceed the batch's
        size) and wait until each has committed or failed; each outcome is left on its PendingInsert."""
        self._write_queued(pendings)

    @property
    def writing(self) -> bool:
        """Whether a caller is writing batches now."""
        return self._writing

    def _write_queued(self, pendings: Sequence[PendingInsert]) -> None:
        """Queue `pendings`; wait while another caller writes, and lead when nobody does: write the
        batches queued until these are written, then let the next waiting caller lead."""
        with self._wakeup:
            if self._pid != os.getpid():  # a forked child: nobody of the parent writes here
                self._pid, self._writing = os.getpid(), False
                self._queue.clear()
            self._queue.extend(pendings)
            while self._writing and not _all_done(pendings):
                self._wakeup.wait()
            if _all_done(pendings):
                return
            self._writing = True
        try:
            while not _all_done(pendings):
                with self._wakeup:
                    batch = self._next_batch()
                self._write_answered(batch)
                with self._wakeup:  # the callers this batch answered go on
                    self._wakeup.notify_all()
        finally:
            with self._wakeup:
                self._writing = False
                self._wakeup.notify_all()

    def _next_batch(self) -> list[PendingInsert]:
        """The inserts queued now, in order, up to the batch's size (at least one)."""
        batch = [self._queue.popleft()]
        size = len(batch[0].stored_events)
        while self._queue and size + len(self._queue[0].stored_events) <= self._max_batch_events:
            pending = self._queue.popleft()
            size += len(pending.stored_events)
            batch.append(pending)
        return batch

    def _write_answered(self, batch: list[PendingInsert]) -> None:
        """Write one batch; every caller in it is answered, whatever happens."""
        try:
            self._write_batch(batch)
        except BaseException as error:  # noqa: BLE001 - every waiting caller must be answered
            for pending in batch:
                if not pending.done:
                    pending.fail(error)
            if not isinstance(error, Exception):
                raise
        finally:
            self.batches += 1
            self.inserts += len(batch)

    def _write_batch(self, batch: list[PendingInsert]) -> None:
        with self._recorder.datastore.get_connection() as conn:
            error = self._write_together(conn, batch)
            if error is None:
                return
            if len(batch) == 1 or _is_connection_error(error):
                for pending in batch:
                    pending.fail(error)
                return
            self.savepoint_batches += 1
            self._write_each_under_savepoint(conn, batch)

    def _write_together(self, conn: psycopg.Connection[Any], batch: list[PendingInsert]) -> BaseException | None:
        """All callers in one transaction and one INSERT; returns the error (all rolled back) instead of raising it."""
        recorder = self._recorder
        inserted, refused = batch, []
        try:
            with conn.transaction(), conn.cursor() as curs:
                for pending in batch:
                    recorder._insert_events(curs, pending.stored_events, **pending.kwargs)
                curs.execute(self._lock_and_notify)
                if self._checks_versions(batch):
                    inserted, refused, notification_ids = self._insert_untaken(curs, batch)
                else:
                    self._insert_rows(curs, [e for pending in batch for e in pending.stored_events])
                    notification_ids = [row["notification_id"] for row in curs.fetchall()]
        except Exception as error:  # noqa: BLE001 - decided on by the caller
            return error
        start = 0
        for pending in inserted:
            end = start + len(pending.stored_events)
            pending.succeed(notification_ids[start:end])
            start = end
        for pending in refused:
            pending.fail(persistence.IntegrityError("duplicate key value violates unique constraint (version taken)"))
        return None

    @staticmethod
    def _checks_versions(batch: list[PendingInsert]) -> bool:
        """Whether the INSERT leaves out the callers whose versions are taken: with several callers
        (one caller's conflict is its own error anyway) and no tracking records."""
        return len(batch) > 1 and not any(pending.kwargs for pending in batch)

    def _insert_untaken(
        self, curs: psycopg.Cursor[Any], batch: list[PendingInsert]
    ) -> tuple[list[PendingInsert], list[PendingInsert], list[int]]:
        """The callers inserted, those refused (a version of theirs is taken) and the inserted rows'
        notification ids, in one statement. Exact under the table lock (no insert can commit
        meanwhile); the unique constraint still decides whatever this misses."""
        events = [(i, e) for i, pending in enumerate(batch) for e in pending.stored_events]
        curs.execute(
            self._insert_untaken_statement,
            (
                [e.originator_id for _, e in events],
                [e.originator_version for _, e in events],
                [e.topic for _, e in events],
                [e.state for _, e in events],
                [i for i, _ in events],
            ),
            prepare=True,
            binary=True,
        )
        rows = curs.fetchall()
        refused_callers = {row["caller"] for row in rows if row["caller"] is not None}
        if refused_callers:
            self.refused_by_check += len(refused_callers)
        notification_ids = sorted(row["notification_id"] for row in rows if row["caller"] is None)  # in row order
        inserted = [p for i, p in enumerate(batch) if i not in refused_callers]
        refused = [p for i, p in enumerate(batch) if i in refused_callers]
        return inserted, refused, notification_ids

    def _write_each_under_savepoint(self, conn: psycopg.Connection[Any], batch: list[PendingInsert]) -> None:
        """The slow path after a conflict: each caller under its own SAVEPOINT, one commit."""
        recorder = self._recorder
        written: list[tuple[PendingInsert, list[int]]] = []
        with conn.transaction(), conn.cursor() as curs:
            curs.execute(self._lock_and_notify)
            for pending in batch:
                try:
                    with conn.transaction():
                        recorder._insert_events(curs, pending.stored_events, **pending.kwargs)
                        self._insert_rows(curs, pending.stored_events)
                        ids = [row["notification_id"] for row in curs.fetchall()]
                except Exception as error:  # noqa: BLE001 - this caller's own failure
                    if _is_connection_error(error):
                        raise
                    pending.fail(error)
                else:
                    written.append((pending, ids))
        for pending, ids in written:
            pending.succeed(ids)

    def _insert_rows(self, curs: psycopg.Cursor[Any], stored_events: Sequence[StoredEvent]) -> None:
        """The rows eventsourcing's statement inserts, sent as four binary arrays (not text composites)."""
        curs.execute(
            self._insert_statement,
            (
                [e.originator_id for e in stored_events],
                [e.originator_version for e in stored_events],
                [e.topic for e in stored_events],
                [e.state for e in stored_events],
            ),
            prepare=True,
            binary=True,
        )


def _all_done(pendings: Sequence[PendingInsert]) -> bool:
    return all(pending.done for pending in pendings)


class GroupCommitInserts:
    """Mixin for PostgreSQL application and process recorders: inserts go through a GroupCommitWriter."""

    max_batch_events = DEFAULT_MAX_BATCH_EVENTS
    _group_commit_writer: GroupCommitWriter | None = None
    _group_commit_writer_lock = threading.Lock()

    @property
    def group_commit_writer(self) -> GroupCommitWriter:
        if self._group_commit_writer is None:
            with self._group_commit_writer_lock:
                if self._group_commit_writer is None:
                    assert isinstance(self, PostgresApplicationRecorder)
                    self._group_commit_writer = GroupCommitWriter(self, self.max_batch_events)
        return self._group_commit_writer

    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        assert isinstance(self, PostgresApplicationRecorder)
        if not stored_events or self.datastore.enable_db_functions:
            return super().insert_events(stored_events, **kwargs)  # type: ignore[misc]  # a mixin: super() is the PostgreSQL recorder
        return self._insert_together(stored_events, kwargs)

    @retry((persistence.InterfaceError, persistence.OperationalError), max_attempts=10, wait=0.2)
    def _insert_together(self, stored_events: Sequence[StoredEvent], kwargs: dict[str, Any]) -> list[int]:
        return self.group_commit_writer.write(PendingInsert(stored_events, kwargs))

    @retry((persistence.InterfaceError, persistence.OperationalError), max_attempts=10, wait=0.2)
    def insert_events_each(
        self, groups: Sequence[Sequence[StoredEvent]]
    ) -> list[list[int] | persistence.IntegrityError]:
        """Each group inserted as its own caller, all in one transaction: a group that conflicts gets its
        IntegrityError and nothing of it is written, the others commit. A connection error is raised
        (for every group: it may have cut the shared transaction's COMMIT)."""
        pendings = [PendingInsert(stored_events, {}) for stored_events in groups]
        self.group_commit_writer.write_each(pendings)
        outcomes: list[list[int] | persistence.IntegrityError] = []
        for pending in pendings:
            if pending.error is None:
                assert pending.notification_ids is not None
                outcomes.append(pending.notification_ids)
            elif isinstance(pending.error, persistence.IntegrityError):
                outcomes.append(pending.error)
        for pending in pendings:
            if pending.error is not None and not isinstance(pending.error, persistence.IntegrityError):
                raise pending.error
        return outcomes
