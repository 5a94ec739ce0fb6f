"""The metadata cache in PostgreSQL: provider answers by normalized URL, with an expiry."""

from __future__ import annotations

from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Identifier
from psycopg.types.json import Jsonb


class PostgresMetadataCache:
    def __init__(self, datastore: PostgresDatastore, table: str = "metadata_cache") -> None:
        self.datastore = datastore
        self.table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier(table))

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (url_key text PRIMARY KEY, info jsonb NOT NULL, "
                    "fetched_at timestamptz NOT NULL DEFAULT now(), expires_at timestamptz NOT NULL)"
                ).format(self.table)
            )

    def get(self, url_key: str) -> dict[str, Any] | None:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL("SELECT info FROM {} WHERE url_key = %s AND expires_at > now()").format(self.table), (url_key,)
            )
            row = curs.fetchone()
        return row["info"] if row else None

    def put(self, url_key: str, info: dict[str, Any], ttl_seconds: float) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (url_key, info, fetched_at, expires_at) "
                    "VALUES (%s, %s, now(), now() + make_interval(secs => %s)) "
                    "ON CONFLICT (url_key) DO UPDATE SET info = EXCLUDED.info, fetched_at = EXCLUDED.fetched_at, "
                    "expires_at = EXCLUDED.expires_at"
                ).format(self.table),
                (url_key, Jsonb(info), ttl_seconds),
            )

    def invalidate(self, url_key: str) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {} WHERE url_key = %s").format(self.table), (url_key,))

    def purge_expired(self) -> int:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(SQL("DELETE FROM {} WHERE expires_at <= now()").format(self.table))
            return curs.rowcount
