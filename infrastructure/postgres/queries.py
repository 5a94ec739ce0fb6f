"""Reads of the events and tracking tables that eventsourcing's recorder interface does not offer."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import Any
from uuid import UUID

from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from infrastructure.postgres.store_connections import read_retried


def notification_ids(recorder: Any, originator_id: UUID) -> dict[int, int]:
    """Each version of an aggregate → its position in the application's log."""
    statement = SQL("SELECT originator_version, notification_id FROM {}.{} WHERE originator_id = %s").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (originator_id,))
        return {row["originator_version"]: row["notification_id"] for row in curs.fetchall()}


def tracking_position(recorder: Any, tracking_table: str, application_name: str) -> int | None:
    """How far a projection with that tracking table has processed the application's log."""
    statement = SQL("SELECT notification_id FROM {}.{} WHERE application_name = %s").format(
        Identifier(recorder.datastore.schema), Identifier(tracking_table)
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (application_name,))
        row = curs.fetchone()
    return row["notification_id"] if row else None


def log_positions(recorder: Any, tracking_table: str, application_name: str, timeout: float) -> tuple[int, int]:
    """The head of the log and a projection's position, in one statement bounded by `timeout` seconds."""
    schema = Identifier(recorder.datastore.schema)
    query = SQL(
        "SELECT (SELECT max(notification_id) FROM {}.{}) AS head, "
        "(SELECT max(notification_id) FROM {}.{} WHERE application_name = %s) AS position"
    ).format(schema, Identifier(recorder.events_table_name), schema, Identifier(tracking_table))

    def read() -> Any:
        recorder.datastore.pool.open(wait=False)  # a no-op once open
        with recorder.datastore.pool.connection(timeout=timeout) as conn, conn.transaction():
            conn.execute(SQL("SET LOCAL statement_timeout = {}").format(int(timeout * 1000)))
            return conn.execute(query, (application_name,)).fetchone()

    row = read_retried(recorder.datastore, read)
    return row["head"] or 0, row["position"] or 0


def event_rows(recorder: Any, *, after: int = 0, stop: int | None = None, itersize: int = 10_000) -> Iterator[tuple]:
    """(position, originator id, version, topic, state) of every event after a position, in order, streamed
    through a server-side cursor (one round trip per `itersize` rows, tuples instead of dicts; binary results:
    no hex decoding of the states)."""
    table = SQL("{}.{}").format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn, conn.transaction():
        with conn.cursor(name="event_rows", row_factory=tuple_row, binary=True) as curs:
            curs.itersize = itersize
            curs.execute(
                SQL(
                    "SELECT notification_id, originator_id, originator_version, topic, state FROM {} "
                    "WHERE notification_id > %s AND notification_id <= %s ORDER BY notification_id"
                ).format(table),
                (after, stop if stop is not None else 2**62),
            )
            yield from prefetched(curs, itersize)


def prefetched(cursor: Any, size: int) -> Generator[Any, None, None]:
    """A server-side cursor's rows, `size` at a time, the next page fetched in a thread while the caller
    works through this one: PostgreSQL reads and sends it on another core, and the wait for it releases
    the GIL. Closing the iterator stops the thread before it returns (the cursor is free again)."""
    pages: queue.Queue[Any] = queue.Queue(maxsize=2)
    stopping = threading.Event()

    def fetch() -> None:
        try:
            while not stopping.is_set():
                page = cursor.fetchmany(size)
                while not stopping.is_set():
                    try:
                        pages.put(page, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if not page:
                    return
        except BaseException as error:  # noqa: BLE001 - raised in the caller's thread
            pages.put(error)

    thread = threading.Thread(target=fetch, name="prefetch-rows", daemon=True)
    thread.start()
    try:
        while True:
            page = pages.get()
            if isinstance(page, BaseException):
                raise page
            if not page:
                return
            yield from page
    finally:
        stopping.set()
        while thread.is_alive():
            try:
                pages.get(timeout=0.05)
            except queue.Empty:
                pass
