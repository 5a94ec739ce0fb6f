"""Real PostgreSQL for tests: the server at 127.0.0.1:5432 when reachable, and an embedded one."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg

EXTERNAL = {"host": "127.0.0.1", "port": "5432", "user": "postgres", "password": ""}


def external_reachable() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5432), timeout=1):
            pass
        with psycopg.connect(_conninfo(EXTERNAL, "postgres"), connect_timeout=3):
            return True
    except OSError:
        return False
    except psycopg.Error:
        return False


def server_kinds() -> list[str]:
    """Which servers the integration tier runs on (MEDIATASKS_TEST_POSTGRES=external|embedded|both)."""
    wanted = os.environ.get("MEDIATASKS_TEST_POSTGRES", "both")
    reachable = external_reachable()
    if wanted == "external" and reachable:
        return ["external"]
    if wanted == "embedded" or not reachable:
        return ["embedded"]
    return ["external", "embedded"]


def _conninfo(server: dict[str, str], dbname: str) -> str:
    return psycopg.conninfo.make_conninfo(
        host=server["host"],
        port=server["port"],
        user=server["user"],
        password=server["password"] or None,
        dbname=dbname,
    )


_embedded: dict[str, str] | None = None


def embedded_server() -> dict[str, str]:
    """One embedded server per test run, in a temporary data dir; stopped at exit."""
    global _embedded
    if _embedded is None:
        from infrastructure.postgres.embedded_server import postgres_env_from_url, start_embedded_postgres

        data_dir = Path(tempfile.mkdtemp(prefix="mt-pg-"))
        env = postgres_env_from_url(start_embedded_postgres(data_dir))
        _embedded = {
            "host": env["POSTGRES_HOST"],
            "port": env["POSTGRES_PORT"],
            "user": env["POSTGRES_USER"],
            "password": env["POSTGRES_PASSWORD"],
        }
    return _embedded


@contextmanager
def fresh_database(kind: str) -> Iterator[dict[str, str]]:
    """A new database on the chosen server, dropped afterwards; yields POSTGRES_* variables."""
    server = EXTERNAL if kind == "external" else embedded_server()
    name = f"mediatasks_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(_conninfo(server, "postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "POSTGRES_HOST": server["host"],
            "POSTGRES_PORT": server["port"],
            "POSTGRES_USER": server["user"],
            "POSTGRES_PASSWORD": server["password"],
            "POSTGRES_DBNAME": name,
        }
    finally:
        with psycopg.connect(_conninfo(server, "postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(pg: dict[str, str]) -> str:
    """A postgresql:// URL for MEDIATASKS_DATABASE_URL (socket dirs go in ?host=)."""
    host = pg["POSTGRES_HOST"]
    auth = pg["POSTGRES_USER"] + (":" + pg["POSTGRES_PASSWORD"] if pg["POSTGRES_PASSWORD"] else "")
    if host.startswith("/"):
        return f"postgresql://{auth}@/{pg['POSTGRES_DBNAME']}?host={host}&port={pg['POSTGRES_PORT']}"
    return f"postgresql://{auth}@{host}:{pg['POSTGRES_PORT']}/{pg['POSTGRES_DBNAME']}"


def drop_schema(pg: dict[str, str], schema: str) -> None:
    server = {
        "host": pg["POSTGRES_HOST"],
        "port": pg["POSTGRES_PORT"],
        "user": pg["POSTGRES_USER"],
        "password": pg["POSTGRES_PASSWORD"],
    }
    with psycopg.connect(_conninfo(server, pg["POSTGRES_DBNAME"]), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
