"""Token ids (`jti`) seen by any worker, in PostgreSQL: a token is accepted once across all of them."""

from __future__ import annotations

import threading
import time

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier

PURGE_EVERY_SECONDS = 60.0


class PostgresSeenTokenIds:
    """`SeenTokenIds` shared by every process on one database.

    `remember` is one `INSERT … ON CONFLICT DO NOTHING`: of two workers given the same token at
    the same moment, exactly one inserts the row. Rows of expired tokens are deleted now and then.
    """

    def __init__(self, datastore: PostgresDatastore, table: str = "qstash_seen_token_ids") -> None:
        self.datastore = datastore
        self.table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(table))
        self._next_purge = 0.0
        self._lock = threading.Lock()

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL("CREATE TABLE IF NOT EXISTS {} (jti text PRIMARY KEY, expires_at timestamptz NOT NULL)").format(
                    self.table
                )
            )

    def remember(self, jti: str, expires_at: float) -> bool:
        self._purge_if_due()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (jti, expires_at) VALUES (%s, to_timestamp(%s)) ON CONFLICT (jti) DO NOTHING"
                ).format(self.table),
                (jti, expires_at),
            )
            return curs.rowcount == 1

    def purge_expired(self) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {} WHERE expires_at <= now()").format(self.table))
            return curs.rowcount

    def _purge_if_due(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now < self._next_purge:
                return
            self._next_purge = now + PURGE_EVERY_SECONDS
        self.purge_expired()
