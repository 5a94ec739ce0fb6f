"""A follower's read of the event log at a long log: without and with the (topic, notification_id) index.

Run: .venv/bin/python bench/follower_reads.py [--events 50000,200000] [--pulls 200]
Builds the log in bulk (one INSERT … SELECT: per task Started, Downloading, Processing ×2, Extracted,
Charged; one terminal Failed at the very start), then times the read each follower makes at every
NOTIFY and catch-up — eventsourcing's `select_notifications` statement — from its last matching event
to the head: the refund issuer (Failed: its last match is the first event), the QStash publisher
(Started, Retried), the dispatcher (Started, Retried, Failed) and the live hub (every task event).
Wall time and the PostgreSQL backend's CPU (from /proc, so the machine's other load is not counted)
per read, then the same after `create_topic_index`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from _harness import database
from eventsourcing.utils import get_topic
from psycopg.sql import SQL, Composed, Identifier

from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.postgres.tables import create_tables
from infrastructure.postgres.topic_index import topic_index_name, topic_reads_statement
from infrastructure.settings import Settings
from tests.support.postgres import database_url

TABLE = "mediatasks_events"
CYCLE = [
    get_topic(t)
    for t in (
        MediaTask.Started,
        MediaTask.Downloading,
        MediaTask.Processing,
        MediaTask.Processing,
        MediaTask.Extracted,
        CreditAccount.Charged,
    )
]
FOLLOWERS = {
    "refund issuer": [get_topic(MediaTask.Failed)],
    "publisher": [get_topic(MediaTask.Started), get_topic(MediaTask.Retried)],
    "dispatcher": [get_topic(MediaTask.Started), get_topic(MediaTask.Retried), get_topic(MediaTask.Failed)],
    "live hub": sorted({*CYCLE[:5], get_topic(MediaTask.Failed), get_topic(MediaTask.Retried)}),
}


def backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fill(conn: psycopg.Connection, schema: str, events: int) -> None:
    table = Identifier(schema, TABLE)
    head = conn.execute(SQL("SELECT coalesce(max(notification_id), 0) FROM {}").format(table)).fetchone()[0]
    if head == 0:
        conn.execute(
            SQL(
                "INSERT INTO {} (originator_id, originator_version, topic, state) "
                "VALUES (gen_random_uuid(), 1, %s, '\\x7b7d')"
            ).format(table),
            (FOLLOWERS["refund issuer"][0],),
        )
        head = 1
    conn.execute(
        SQL(
            "INSERT INTO {} (originator_id, originator_version, topic, state) "
            "SELECT gen_random_uuid(), 1, (%s::text[])[1 + i %% 6], '\\x7b7d' "
            "FROM generate_series(%s, %s) AS i"
        ).format(table),
        (CYCLE, head, events - 1),
    )
    conn.execute(SQL("VACUUM ANALYZE {}").format(table))


def last_match(conn: psycopg.Connection, schema: str, topics: list[str]) -> int:
    row = conn.execute(
        SQL("SELECT max(notification_id) FROM {} WHERE topic = ANY(%s)").format(Identifier(schema, TABLE)), (topics,)
    ).fetchone()
    return row[0]


def library_statement(schema: str, topics: list[str]) -> tuple[Composed, Callable[[int], Any]]:
    """eventsourcing's own `select_notifications` statement: the topics are a parameter."""
    statement = SQL(
        "SELECT * FROM {} WHERE notification_id>%s AND topic = ANY(%s) ORDER BY notification_id LIMIT %s"
    ).format(Identifier(schema, TABLE))
    return statement, lambda start: [start, topics, 100]


def project_statement(schema: str, topics: list[str]) -> tuple[Composed, Callable[[int], Any]]:
    """The project's (infrastructure/postgres/topic_index.py): one index range per topic, written in."""
    statement = topic_reads_statement(schema, TABLE, topics, inclusive_of_start=False, has_stop=False)
    return statement, lambda start: {"start": start, "limit": 100}


def measure(conn: psycopg.Connection, schema: str, pulls: int, build) -> dict[str, tuple[float, float]]:
    """Per follower: wall ms and backend CPU ms per read from its last matching event (prepared, as
    eventsourcing executes it, so PostgreSQL's generic plan is what runs after the fifth read)."""
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
    results = {}
    for name, topics in FOLLOWERS.items():
        start = last_match(conn, schema, topics)
        statement, parameters = build(schema, topics)
        params = parameters(start)
        for _ in range(8):  # past the five custom plans PostgreSQL tries before a generic one
            conn.execute(statement, params, prepare=True).fetchall()
        cpu, wall = backend_cpu(pid), time.perf_counter()
        for _ in range(pulls):
            assert conn.execute(statement, params, prepare=True).fetchall() == []
        results[name] = ((time.perf_counter() - wall) / pulls * 1e3, (backend_cpu(pid) - cpu) / pulls * 1e3)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", default="50000,200000")
    parser.add_argument("--pulls", type=int, default=200)
    args = parser.parse_args()
    with database() as pg:
        env = Settings(postgres_schema="bench_follow").event_store_env(pg)
        create_tables(env)
        schema = env["POSTGRES_SCHEMA"]
        index = Identifier(schema, topic_index_name(TABLE))
        print("ms per read (wall / PostgreSQL backend CPU), prepared statements, from each follower's last match\n")
        print(
            f"{'events':>8}  {'follower':<14} {'no index':>15} {'index, topics a parameter':>26}"
            f" {'index, topics a literal':>24} {'ratio':>7}"
        )
        with psycopg.connect(database_url(pg), autocommit=True) as conn:
            for events in (int(n) for n in args.events.split(",")):
                fill(conn, schema, events)
                conn.execute(SQL("DROP INDEX IF EXISTS {}").format(index))
                before = measure(conn, schema, args.pulls, library_statement)
                create_tables(env)  # creates the index again, as `serve` does at start
                conn.execute(SQL("ANALYZE {}").format(Identifier(schema, TABLE)))
                conn.execute("DEALLOCATE ALL")
                conn._prepared._names.clear()  # psycopg's cache of prepared names: they are gone now
                library = measure(conn, schema, args.pulls, library_statement)
                project = measure(conn, schema, args.pulls, project_statement)
                for name in FOLLOWERS:
                    cells = [f"{w:.3f} / {c:.3f}" for w, c in (before[name], library[name], project[name])]
                    print(
                        f"{events:>8}  {name:<14} {cells[0]:>15} {cells[1]:>26} {cells[2]:>24}"
                        f" {before[name][0] / project[name][0]:>6.0f}×"
                    )


if __name__ == "__main__":
    main()
