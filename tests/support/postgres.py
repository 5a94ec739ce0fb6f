"""Real PostgreSQL for tests: the server at 127.0.0.1:5432 when reachable, and an embedded one."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg.sql import SQL, Identifier, Placeholder

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


# Everything a test could change about a schema's objects (not its rows): relations and their options,
# columns, defaults, indexes, constraints, triggers, rules, policies, functions, types and grants.
_SCHEMA_SHAPE = """
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), '')) FROM (
  SELECT format('rel %%s %%s %%s %%s %%s %%s %%s', c.relname, c.relkind, c.relpersistence, c.relrowsecurity,
                c.reloptions, c.relacl, coalesce(pg_get_indexdef(c.oid), '')) AS item
    FROM pg_class c WHERE c.relnamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('col %%s.%%s %%s %%s %%s', c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = %(schema)s::regnamespace AND a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
  SELECT format('con %%s %%s', conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('trg %%s %%s', t.tgenabled, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid WHERE c.relnamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('rule %%s', pg_get_ruledef(r.oid))
    FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class WHERE c.relnamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('policy %%s %%s', p.polname, p.polrelid::regclass)
    FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid WHERE c.relnamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('fn %%s %%s %%s', p.oid::regprocedure, md5(p.prosrc), p.proacl)
    FROM pg_proc p WHERE p.pronamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('type %%s %%s', t.typname, t.typtype) FROM pg_type t WHERE t.typnamespace = %(schema)s::regnamespace
  UNION ALL
  SELECT format('schema %%s %%s', n.nspowner, n.nspacl) FROM pg_namespace n WHERE n.oid = %(schema)s::regnamespace
) shape
"""


class SchemaPool:
    """Schemas of one database with every table created, each handed to one test at a time, empty.

    Creating the tables costs ~60 statements (0.5-1 s on a shared server); emptying a used schema
    costs one transaction. `give_back` empties a schema (deletes its rows, puts back the rows and
    sequence positions it had when created) when its objects are as they were created; a schema
    whose objects a test changed (a rebuilt read model, a dropped table, a revoked grant) is dropped.
    """

    def __init__(self, pg: dict[str, str], create: Callable[[str], None]) -> None:
        self.pg = pg
        self._create = create
        self._free: list[str] = []
        self._baselines: dict[str, _Baseline] = {}

    def _connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        server = {
            "host": self.pg["POSTGRES_HOST"],
            "port": self.pg["POSTGRES_PORT"],
            "user": self.pg["POSTGRES_USER"],
            "password": self.pg["POSTGRES_PASSWORD"],
        }
        return psycopg.connect(_conninfo(server, self.pg["POSTGRES_DBNAME"]), **kwargs)

    def take(self, prefix: str = "t") -> str:
        """The name of an empty schema with every table (newly created when none is free)."""
        if self._free:
            return self._free.pop()
        schema = f"{prefix}_{uuid.uuid4().hex[:10]}"
        self._create(schema)
        with self._connect(autocommit=True) as conn:
            self._baselines[schema] = _Baseline.of(conn, schema)
        return schema

    def give_back(self, schema: str) -> None:
        """Empty `schema` for the next test, or drop it when its objects changed or it cannot be emptied."""
        baseline = self._baselines.get(schema)
        if baseline is not None:
            try:
                with self._connect() as conn:
                    conn.execute("SET lock_timeout = '5s'")
                    if _shape(conn, schema) == baseline.shape:
                        baseline.restore(conn, schema)
                        conn.commit()
                        self._free.append(schema)
                        return
            except psycopg.Error:
                pass  # still in use by something the test left behind: dropped below (or left to the database drop)
            del self._baselines[schema]
        try:
            drop_schema(self.pg, schema)
        except psycopg.Error:
            pass


def _shape(conn: psycopg.Connection[Any], schema: str) -> str:
    row = conn.execute(_SCHEMA_SHAPE, {"schema": schema}).fetchone()
    assert row is not None
    return str(row[0])


@dataclass
class _Baseline:
    """A schema as created: the shape of its objects, its rows (few) and its sequences' positions."""

    shape: str
    tables: list[str]
    rows: dict[str, tuple[list[str], list[tuple[Any, ...]]]]
    sequences: dict[str, tuple[int, bool]]

    @classmethod
    def of(cls, conn: psycopg.Connection[Any], schema: str) -> _Baseline:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        rows = {}
        for table in tables:
            cursor = conn.execute(SQL("SELECT * FROM {}.{}").format(Identifier(schema), Identifier(table)))
            found = cursor.fetchall()
            if found:
                rows[table] = ([c.name for c in cursor.description or []], found)
        sequences = {
            name: (last if last is not None else start, last is not None)
            for name, start, last in conn.execute(
                "SELECT sequencename, start_value, last_value FROM pg_sequences WHERE schemaname = %s", (schema,)
            )
        }
        return cls(_shape(conn, schema), tables, rows, sequences)

    def restore(self, conn: psycopg.Connection[Any], schema: str) -> None:
        for table in self.tables:
            conn.execute(SQL("DELETE FROM {}.{}").format(Identifier(schema), Identifier(table)))
        for table, (columns, rows) in self.rows.items():
            insert = SQL("INSERT INTO {}.{} ({}) VALUES ({})").format(
                Identifier(schema),
                Identifier(table),
                SQL(", ").join(map(Identifier, columns)),
                SQL(", ").join(Placeholder() * len(columns)),
            )
            conn.cursor().executemany(insert, rows)
        for name, (value, called) in self.sequences.items():
            conn.execute("SELECT setval(%s::regclass, %s, %s)", (f'"{schema}"."{name}"', value, called))
