"""The sealing follower: the notification log hashed, in order, into a chain of signed checkpoints.

The chain lives in tables of its own (`mediatasks_audit_links`: one link per event;
`mediatasks_audit_checkpoints`: the signed ones), written in one transaction with the follower's
tracking position (`mediatasks_audit_tracking`), so a follower killed at any moment resumes from
a link that matches its position. The events table and eventsourcing's recorder are untouched.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.conninfo import make_conninfo
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Composed, Identifier

from application.audit_chain import GENESIS, Checkpoint, CheckpointSigner, chain_link, checkpoint_message
from infrastructure.postgres.queries import prefetched
from infrastructure.supervision import Supervised, Supervisor

logger = logging.getLogger(__name__)

LINKS_TABLE = "mediatasks_audit_links"
CHECKPOINTS_TABLE = "mediatasks_audit_checkpoints"
TRACKING_TABLE = "mediatasks_audit_tracking"
SCAN_ROWS = 10_000


class PostgresSeal(PostgresTrackingRecorder):
    """The chain's tables and the sealing follower's tracking."""

    def __init__(self, datastore: PostgresDatastore, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=TRACKING_TABLE, **kwargs)
        schema = Identifier(datastore.schema)
        self.links_table = SQL("{}.{}").format(schema, Identifier(LINKS_TABLE))
        self.checkpoints_table = SQL("{}.{}").format(schema, Identifier(CHECKPOINTS_TABLE))
        self.sql_create_statements.extend(
            [
                SQL("CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, chain bytea NOT NULL)").format(
                    self.links_table
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, chain bytea NOT NULL, "
                    "sealed_at timestamptz NOT NULL, algorithm text NOT NULL, key_id text NOT NULL, "
                    "signature bytea NOT NULL)"
                ).format(self.checkpoints_table),
            ]
        )

    def last_link(self) -> tuple[int, bytes]:
        """The last sealed position and its link ((0, GENESIS) before the first)."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT position, chain FROM {} ORDER BY position DESC LIMIT 1").format(self.links_table))
            row = curs.fetchone()
        return (row["position"], bytes(row["chain"])) if row else (0, GENESIS)

    def last_checkpoint(self) -> Checkpoint | None:
        found = self.checkpoints(last=True)
        return found[0] if found else None

    def checkpoints(
        self, *, after: int | None = None, stop: int | None = None, last: bool = False, curs: Any = None
    ) -> list[Checkpoint]:
        where, params = [], []
        if after is not None:
            where.append(SQL("position > %s"))
            params.append(after)
        if stop is not None:
            where.append(SQL("position <= %s"))
            params.append(stop)
        statement = SQL("SELECT position, chain, sealed_at, algorithm, key_id, signature FROM {}").format(
            self.checkpoints_table
        )
        if where:
            statement += SQL(" WHERE ") + SQL(" AND ").join(where)
        statement += SQL(" ORDER BY position DESC LIMIT 1" if last else " ORDER BY position")
        if curs is not None:
            curs.execute(statement, params)
            rows = curs.fetchall()
        else:
            with self.datastore.get_connection() as conn, conn.cursor() as own:
                own.execute(statement, params)
                rows = own.fetchall()
        return [_checkpoint(r) for r in rows]

    def record(self, tracking: Tracking | None, links: list[tuple[int, bytes]], checkpoint: Checkpoint | None) -> None:
        """Links, a checkpoint and the tracking position in one transaction (IntegrityError: a rival did it)."""
        with self.datastore.transaction(commit=True) as curs:
            if tracking is not None:
                self._insert_tracking(curs, tracking)
            if links:
                with curs.copy(SQL("COPY {} (position, chain) FROM STDIN").format(self.links_table)) as copy:
                    for row in links:
                        copy.write_row(row)
            if checkpoint is not None:
                curs.execute(
                    SQL(
                        "INSERT INTO {} (position, chain, sealed_at, algorithm, key_id, signature) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (position) DO NOTHING"
                    ).format(self.checkpoints_table),
                    (
                        checkpoint.position,
                        checkpoint.chain,
                        checkpoint.sealed_at,
                        checkpoint.algorithm,
                        checkpoint.key_id,
                        checkpoint.signature,
                    ),
                )

    def links_before(self, position: int, curs: Any = None) -> tuple[int, bytes]:
        """The last link at or before a position ((0, GENESIS) if none)."""
        statement = SQL("SELECT position, chain FROM {} WHERE position <= %s ORDER BY position DESC LIMIT 1").format(
            self.links_table
        )
        if curs is not None:
            curs.execute(statement, (position,))
            row = curs.fetchone()
        else:
            with self.datastore.get_connection() as conn, conn.cursor() as own:
                own.execute(statement, (position,))
                row = own.fetchone()
        return (row["position"], bytes(row["chain"])) if row else (0, GENESIS)


def _checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        row["position"], bytes(row["chain"]), row["sealed_at"], row["algorithm"], row["key_id"], bytes(row["signature"])
    )


class SealingFollower:
    """Follows the application's log and seals it: one link per event, a signed checkpoint every
    `checkpoint_events` events or `checkpoint_seconds` seconds (whichever comes first).

    `run(stopping)` follows until `stopping` is set, raises on any error, and resumes from its
    tracking position when called again; `start()`/`stop()` run it under a supervisor (infrastructure/supervision.py).
    """

    name = "AuditSeal"

    def __init__(
        self,
        app: Any,
        seal: PostgresSeal,
        signer: CheckpointSigner,
        *,
        checkpoint_events: int = 10_000,
        checkpoint_seconds: float = 60.0,
        poll_seconds: float = 1.0,
        page: int = 1_000,
    ) -> None:
        self.app, self.seal, self.signer = app, seal, signer
        self.checkpoint_events = checkpoint_events
        self.checkpoint_seconds = checkpoint_seconds
        self.poll_seconds = poll_seconds
        self.page = page
        self._supervised = Supervised()
        self._position, self._chain, self._checkpointed, self._checkpoint_clock = 0, GENESIS, 0, 0.0

    def position(self) -> int:
        """The last position sealed (in memory: the supervisor samples it for /readyz)."""
        return self._position

    def run(self, stopping: threading.Event) -> None:
        self.resume()
        while not stopping.is_set():
            if self.step() < self.page:
                stopping.wait(self.poll_seconds)

    def resume(self) -> None:
        """Take up the chain where the tables (links, checkpoints, tracking: written together) left it."""
        self._position, self._chain = self.seal.last_link()
        tracked = self.seal.max_tracking_id(self.app.name) or 0
        self._position = max(self._position, tracked)
        last = self.seal.last_checkpoint()
        self._checkpointed = last.position if last else 0
        self._checkpoint_clock = time.monotonic()

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> None:
        """Seal everything in the log now (tests, and one-off runs: `mediatasks audit seal`), calling
        `progress(position, head)` after each page; interrupted, it resumes from its tracking."""
        self.resume()
        head = self.app.recorder.max_notification_id() or 0
        while self.step() == self.page:
            if progress is not None:
                progress(self._position, max(head, self._position))
        if progress is not None:
            progress(self._position, max(head, self._position))

    def step(self) -> int:
        """Seal the next page of the log (and a checkpoint when one is due); returns the events read."""
        notifications = self.app.recorder.select_notifications(
            start=self._position, limit=self.page, inclusive_of_start=False
        )
        chain, links = self._chain, []
        for n in notifications:
            chain = chain_link(chain, n.id, n.originator_id, n.originator_version, n.topic, n.state)
            links.append((n.id, chain))
        head = links[-1][0] if links else self._position
        checkpoint = None
        # Events since the checkpoint counted by positions (ids may have gaps: a checkpoint comes early).
        if head > self._checkpointed and (
            head - self._checkpointed >= self.checkpoint_events
            or time.monotonic() - self._checkpoint_clock >= self.checkpoint_seconds
        ):
            checkpoint = self._checkpoint(head, chain)
        if links or checkpoint is not None:
            try:
                self.seal.record(Tracking(self.app.name, head) if links else None, links, checkpoint)
            except IntegrityError:  # a rival follower sealed these first: go on from what it wrote
                self.resume()
                return len(notifications)
            self._position, self._chain = head, chain
            if checkpoint is not None:
                self._checkpointed, self._checkpoint_clock = head, time.monotonic()
        return len(notifications)

    def _checkpoint(self, position: int, chain: bytes) -> Checkpoint:
        sealed_at = datetime.now(timezone.utc)
        signature = self.signer.sign(checkpoint_message(position, chain, sealed_at))
        return Checkpoint(position, chain, sealed_at, self.signer.algorithm, self.signer.key_id, signature)

    def start(self, supervisor: Supervisor | None = None) -> None:
        """Run under `supervisor` (else a supervisor of its own), restarted from its tracking after errors."""
        self._supervised.start(supervisor, self)

    def stop(self) -> None:
        self._supervised.stop()


@dataclass
class SealedHistory:
    events: Iterator[Any]  # (position, originator id, version, topic, state)
    links: Iterator[tuple[int, bytes]]
    checkpoints: list[Checkpoint]
    head: int  # the last event's position (or `stop`)
    last_link: int  # the last link's position
    snapshot: ExportedSnapshot | None = None  # with `export_snapshot`: for a second reader of the same rows


@dataclass(frozen=True)
class ExportedSnapshot:
    """A REPEATABLE READ snapshot another connection can import while the exporting transaction is open."""

    conninfo: str
    snapshot_id: str
    events_table: tuple[str, str]  # schema, table
    links_table: tuple[str, str]
    after: int
    head: int
    stop: int | None
    connection: Any  # the exporting connection (for reads of other tables in the same snapshot)


@contextmanager
def sealed_history(
    app: Any, seal: PostgresSeal, *, after: int = 0, stop: int | None = None, export_snapshot: bool = False
) -> Iterator[SealedHistory]:
    """One consistent snapshot: the events and links after a position (up to `stop`), the checkpoints,
    and the head. Both are streamed through server-side cursors in one REPEATABLE READ transaction;
    with no `stop`, links past the last event are included (the last events' deletion shows)."""
    recorder = app.recorder
    events_table = SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            with conn.cursor() as curs:
                curs.execute(SQL("SELECT max(notification_id) AS head FROM {}").format(events_table))
                head = curs.fetchone()["head"] or 0
                if stop is not None:
                    head = min(head, stop)
                checkpoints = seal.checkpoints(curs=curs)
                curs.execute(SQL("SELECT max(position) AS last FROM {}").format(seal.links_table))
                last_link = curs.fetchone()["last"] or 0
            exported = None
            if export_snapshot:
                snapshot_id = conn.execute("SELECT pg_export_snapshot()").fetchone()["pg_export_snapshot"]
                conninfo = make_conninfo(conn.info.dsn, password=conn.info.password or None)
                exported = ExportedSnapshot(
                    conninfo,
                    snapshot_id,
                    (recorder.datastore.schema, recorder.events_table_name),
                    (recorder.datastore.schema, LINKS_TABLE),
                    after,
                    head,
                    stop,
                    conn,
                )
            events, links = open_history_cursors(conn, events_table, seal.links_table, after, head, stop)
            event_rows, link_rows = paged(events), paged(links)
            try:
                yield SealedHistory(event_rows, link_rows, checkpoints, head, last_link, exported)
            finally:
                event_rows.close()  # their fetching threads stop
                link_rows.close()
                events.close()
                links.close()


def open_history_cursors(
    conn: Any, events_table: Composed, links_table: Composed, after: int, head: int, stop: int | None
) -> tuple[Any, Any]:
    """Server-side cursors (binary results) over the events up to `head` and the links up to `stop`."""
    events = open_event_cursor(conn, events_table, after, head)
    links = conn.cursor(name="audit_links", row_factory=tuple_row, binary=True)
    links.itersize = SCAN_ROWS
    links.execute(
        SQL("SELECT position, chain FROM {} WHERE position > %s AND position <= %s ORDER BY position").format(
            links_table
        ),
        (after, stop if stop is not None else 2**62),
    )
    return events, links


def open_event_cursor(
    conn: Any, events_table: Composed, after: int, head: int, only: tuple[Composed, tuple[Any, ...]] | None = None
) -> Any:
    """A server-side cursor (binary results) over (position, originator id, version, topic, state) of the
    events after `after` up to `head`, in order; `only`: those that meet a condition (and its parameters)."""
    events = conn.cursor(name="audit_events", row_factory=tuple_row, binary=True)
    events.itersize = SCAN_ROWS
    statement = SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
        "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
    ).format(events_table)
    if only is None:
        events.execute(statement, (after, head))
    else:  # the range in its index's order, filtered after: OFFSET 0 keeps the condition (whose selectivity
        # PostgreSQL guesses, and a wrong guess sorted every row, in parallel) out of the range's plan
        condition, parameters = only
        statement = SQL("SELECT * FROM ({} OFFSET 0) AS range WHERE {} ORDER BY notification_id").format(
            statement, condition
        )
        events.execute(statement, (after, head, *parameters))
    return events


def paged(cursor: Any) -> Generator[Any, None, None]:
    """A server-side cursor's rows, fetched `SCAN_ROWS` at a time (the next page while this one is used)."""
    return prefetched(cursor, SCAN_ROWS)
