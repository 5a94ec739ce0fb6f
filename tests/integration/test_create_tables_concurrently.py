"""Processes that start together (serve's API and its projections child, uvicorn workers) all
create the tables of one new schema at once; none of them may fail on the race (CI saw serve exit
with a unique violation on pg_namespace when `CREATE SCHEMA IF NOT EXISTS` ran outside the lock)."""

from __future__ import annotations

import threading
import uuid

import psycopg

from infrastructure.postgres.tables import create_tables
from tests.conftest import _store_env

STARTERS = 8
ROUNDS = 6  # the old code failed about four rounds in ten


def _create_at_once(env: dict[str, str]) -> list[BaseException]:
    start = threading.Barrier(STARTERS)
    errors: list[BaseException] = []

    def starter() -> None:
        start.wait()
        try:
            create_tables(env)
        except BaseException as error:  # noqa: BLE001  # collected and asserted by the caller
            errors.append(error)

    threads = [threading.Thread(target=starter) for _ in range(STARTERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a starter still waits after 60 s"
    return errors


def test_tables_created_by_eight_starters_at_once(pg_database: dict[str, str]) -> None:
    connect = {
        "host": pg_database["POSTGRES_HOST"],
        "port": pg_database["POSTGRES_PORT"],
        "user": pg_database["POSTGRES_USER"],
        "password": pg_database["POSTGRES_PASSWORD"],
        "dbname": pg_database["POSTGRES_DBNAME"],
    }
    schemas = [f"race_{uuid.uuid4().hex[:10]}" for _ in range(ROUNDS)]
    try:
        for schema in schemas:
            assert _create_at_once(_store_env(pg_database, schema)) == []
            with psycopg.connect(**connect) as conn:
                tables = conn.execute(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
                ).fetchone()
            assert tables is not None and tables[0] >= 10
    finally:
        with psycopg.connect(**connect, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
