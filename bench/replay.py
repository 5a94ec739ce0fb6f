"""Audit replay over a large history, next to a plain SELECT scan of the same rows; read-model rebuild time.

Run: .venv/bin/python bench/replay.py [--events 1000000]

The history is generated through the application (domain methods and `save`), 100 tasks' whole
lifecycles per transaction so that a million events take minutes, not hours: per task Started,
Downloading, Processing ×2 and Extracted or Failed (+ the account's Charged, and Refunded for
failures via the refund issuer's own policy).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timedelta, timezone

import psycopg
from _harness import database
from psycopg.sql import SQL, Identifier

from application.audit import HistoryAuditor, replay
from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.audit import rebuild, verify
from infrastructure.postgres.tables import construct_views, create_tables
from infrastructure.settings import Settings

URL = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
BATCH = 100
USERS = 100


def generate(app: MediaTasks, events: int) -> int:
    now = datetime.now(timezone.utc)
    lease = timedelta(minutes=10)
    accounts = {}
    for u in range(USERS):
        account = CreditAccount.open(f"user{u}")
        account.grant(10**8, "bench")
        accounts[u] = account
    app.save(*accounts.values())
    written, n = USERS * 2, 0
    while written < events:
        account = accounts[n % USERS]
        tasks = []
        for _ in range(BATCH):
            task = MediaTask.start(user_id=account.user_id, idempotency_key=f"k{n}", url=URL, platform="tiktok",
                                   output_type="subtitles", languages=["en"], credits=1, requested_at=now,
                                   max_attempts=3)
            account.charge(task.id, 1, 1)
            task.begin_attempt(now=now, lease=lease, worker_id="bench")
            task.report_progress(attempt=1, stage="metadata", progress=20)
            task.report_progress(attempt=1, stage="subtitles", progress=80)
            if n % 10 == 0:
                task.fail(attempt=1, code="media_not_found", message="gone", retryable=False)
                account.refund(task.id, 1)
                written += 1
            else:
                task.complete(attempt=1, result={})
            tasks.append(task)
            written += 6
            n += 1
        app.save(*tasks, account)
    return n


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args()
    with database() as pg:
        env = Settings().event_store_env(pg)
        create_tables(env)
        app = MediaTasks(env=env)
        started = time.perf_counter()
        tasks = generate(app, args.events)
        head = app.recorder.max_notification_id()
        print(f"generated {head:,} events ({tasks:,} tasks) in {time.perf_counter() - started:.1f} s")

        started = time.perf_counter()
        with psycopg.connect(host=pg["POSTGRES_HOST"], port=pg["POSTGRES_PORT"], user=pg["POSTGRES_USER"],
                             password=pg["POSTGRES_PASSWORD"] or None, dbname=pg["POSTGRES_DBNAME"]) as conn:
            with conn.cursor(name="scan") as curs:
                curs.itersize = 10_000
                curs.execute(SQL("SELECT notification_id, topic, state FROM {}.mediatasks_events "
                                 "ORDER BY notification_id").format(Identifier("public")))
                rows = sum(1 for _ in curs)
        scan_s = time.perf_counter() - started
        print(f"plain SELECT scan (psycopg, server-side cursor): {rows:,} rows in {scan_s:.2f} s = "
              f"{rows / scan_s:,.0f} rows/s")

        started = time.perf_counter()
        auditor = HistoryAuditor(refunds_tracked_to=head)
        for position, event in replay(app):
            auditor.feed(position, event)
        report = auditor.finish()
        audit_s = time.perf_counter() - started
        print(f"invariant replay (decode + check): {report.events:,} events in {audit_s:.2f} s = "
              f"{report.events / audit_s:,.0f} events/s, {scan_s / audit_s:.2f} of the scan's rate; {report.summary()}")

        old, new, rebuild_s = rebuild(env, app, grace_seconds=0)
        print(f"read-model rebuild (2,000 events per transaction): {head:,} events in "
              f"{rebuild_s:.1f} s = {head / rebuild_s:,.0f} events/s")

        views = construct_views(env, new)
        started = time.perf_counter()
        full = verify(app, views)
        verify_s = time.perf_counter() - started
        print(f"full verify (replay + checks + in-memory rebuild + read-model comparison): {verify_s:.1f} s = "
              f"{full.events / verify_s:,.0f} events/s; {full.summary()}")
        views.datastore.close()
        app.close()


if __name__ == "__main__":
    main()
