"""Raw appends to the event store from 8 threads: group commit on vs off vs raw psycopg batches.

Run: .venv/bin/python bench/appends.py [--threads 8] [--seconds 10] [--events-per-call 1]
Each of the threads calls the recorder's insert_events() in a loop with new aggregates (a call is
what one Application.save() does). The baseline is plain psycopg: each thread writes transactions
of 100 rows with the same statements the recorder uses (table lock, NOTIFY, INSERT … RETURNING),
i.e. what group commit could reach if every shared transaction held 100 events.
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
from _harness import database
from eventsourcing.persistence import StoredEvent
from eventsourcing.utils import Environment

from infrastructure.postgres.event_store import MediaTasksPostgresFactory
from infrastructure.postgres.tables import create_tables
from infrastructure.settings import Settings
from tests.support.postgres import database_url

RAW_ROWS_PER_TRANSACTION = 100


def run_threads(threads: int, seconds: float, call: Callable[[], int]) -> tuple[float, float, float]:
    """Calls/s, events/s and this process's CPU ms per call of `call` (which returns its event count)."""
    stop = time.monotonic() + seconds
    totals = [[0, 0] for _ in range(threads)]

    def loop(i: int) -> None:
        while time.monotonic() < stop:
            totals[i][1] += call()
            totals[i][0] += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    calls = sum(t[0] for t in totals)
    return calls / elapsed, sum(t[1] for t in totals) / elapsed, cpu / calls * 1e3


def recorder_call(pg: dict[str, str], mode: str, events_per_call: int) -> tuple[Callable[[], int], Any]:
    env = Settings(group_commit=mode, postgres_schema=f"bench_{mode}").event_store_env(pg)
    create_tables(env)
    factory = MediaTasksPostgresFactory(Environment("MediaTasks", env))
    recorder = factory.application_recorder()

    def call() -> int:
        originator_id = uuid.uuid4()
        recorder.insert_events([StoredEvent(originator_id, v, "bench", b"{}") for v in range(1, events_per_call + 1)])
        return events_per_call

    return call, factory


def raw_call(pg: dict[str, str]) -> Callable[[], int]:
    url = database_url(pg)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE raw_events (originator_id uuid, originator_version bigint, topic text, "
            "state bytea, notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
    local = threading.local()

    def call() -> int:
        if not hasattr(local, "conn"):
            local.conn = psycopg.connect(url, autocommit=True)
        conn = local.conn
        ids = [uuid.uuid4() for _ in range(RAW_ROWS_PER_TRANSACTION)]
        with conn.pipeline() as pipeline, conn.transaction():
            conn.execute("LOCK TABLE raw_events IN EXCLUSIVE MODE")
            conn.execute("NOTIFY raw_events")
            cur = conn.execute(
                "INSERT INTO raw_events (originator_id, originator_version, topic, state) "
                "SELECT * FROM unnest(%b::uuid[], %b::bigint[], %b::text[], %b::bytea[]) RETURNING notification_id",
                (ids, [1] * len(ids), ["bench"] * len(ids), [b"{}"] * len(ids)),
                prepare=True,
            )
            pipeline.sync()
            cur.fetchall()
        return RAW_ROWS_PER_TRANSACTION

    return call


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--events-per-call", type=int, default=1)
    args = parser.parse_args()
    print(f"{args.threads} threads, {args.seconds:g} s each, {args.events_per_call} event(s) per insert_events()\n")
    print(f"{'writer':<38} {'calls/s':>9} {'events/s':>9} {'vs off':>7} {'CPU ms/call':>12}")
    with database() as pg:
        results: dict[str, float] = {}
        for mode in ("off", "on"):
            call, factory = recorder_call(pg, mode, args.events_per_call)
            run_threads(args.threads, 1, call)
            calls, events, cpu = run_threads(args.threads, args.seconds, call)
            factory.close()
            results[mode] = events
            label = f"recorder, group commit {mode}"
            print(f"{label:<38} {calls:9.0f} {events:9.0f} {events / results['off']:7.2f} {cpu:12.3f}", flush=True)
        calls, events, cpu = run_threads(args.threads, args.seconds, raw_call(pg))
        label = f"raw psycopg, {RAW_ROWS_PER_TRANSACTION}-row transactions"
        print(f"{label:<38} {calls:9.0f} {events:9.0f} {events / results['off']:7.2f} {cpu:12.3f}")


if __name__ == "__main__":
    main()
