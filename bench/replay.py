"""Audits over a large history, each next to a plain SELECT scan of the same rows in the same run: the
invariant replay, the chain verification, the rebuild, the full verify, the export and its offline check.

Run: .venv/bin/python bench/replay.py [--events 1000000] [--keep NAME]

`--keep NAME` generates the history into the external PostgreSQL's database NAME the first time and
keeps it; later runs with the same NAME reuse it (drop it with `DROP DATABASE NAME` when done);
`--generate-only` stops after generating and sealing it (run that part under a lighter gate).

The history is generated through the application (domain methods and `save`), 100 tasks' whole
lifecycles per transaction so that a million events take minutes, not hours: per task Started,
Downloading, Processing ×2 and Extracted or Failed (+ the account's Charged, and for failures the task's and the account's
Refunded, saved together as the refund issuer saves them).
"""

from __future__ import annotations

import argparse
import hashlib
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
from _harness import database
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from psycopg.sql import SQL, Identifier

from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.audit.export import export_writer, verify_export, write_export
from infrastructure.audit.history import rebuild, replay_invariants, verify, verify_chain
from infrastructure.audit.keys import Ed25519Signer
from infrastructure.postgres.audit_seal import PostgresSeal, SealingFollower
from infrastructure.postgres.tables import construct_views, create_tables
from infrastructure.settings import Settings
from tests.support.postgres import EXTERNAL

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
            task = MediaTask.start(
                user_id=account.user_id,
                idempotency_key=f"k{n}",
                url=URL,
                platform="tiktok",
                output_type="subtitles",
                languages=["en"],
                credits=1,
                requested_at=now,
                max_attempts=3,
            )
            account.charge(task.id, 1, 1)
            task.begin_attempt(now=now, lease=lease, worker_id="bench")
            task.report_progress(attempt=1, stage="metadata", progress=20)
            task.report_progress(attempt=1, stage="subtitles", progress=80)
            if n % 10 == 0:
                task.fail(attempt=1, code="media_not_found", message="gone", retryable=False)
                account.refund(task.id, 1, task.refund(1))  # the task releases the charge, the account refunds it
                written += 2
            else:
                task.complete(attempt=1, result={})
            tasks.append(task)
            written += 6
            n += 1
        app.save(*tasks, account)
    return n


@contextmanager
def kept_database(name: str) -> Iterator[tuple[dict[str, str], bool]]:
    """The external server's database `name` (made if missing) and whether it already held a history."""
    server = dict(EXTERNAL)
    conninfo = psycopg.conninfo.make_conninfo(
        host=server["host"], port=server["port"], user=server["user"], password=server["password"] or None
    )
    with psycopg.connect(conninfo, dbname="postgres", autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None
        if not exists:
            conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    with psycopg.connect(conninfo, dbname=name) as conn:
        found = conn.execute("SELECT to_regclass('public.bench_replay_generated') IS NOT NULL").fetchone()
        generated = bool(found and found[0])
    if not generated:  # a run that stopped while generating: start again
        with psycopg.connect(conninfo, dbname="postgres", autocommit=True) as conn:
            conn.execute(SQL("DROP DATABASE {} WITH (FORCE)").format(Identifier(name)))
            conn.execute(SQL("CREATE DATABASE {}").format(Identifier(name)))
    yield (
        {
            "POSTGRES_HOST": server["host"],
            "POSTGRES_PORT": server["port"],
            "POSTGRES_USER": server["user"],
            "POSTGRES_PASSWORD": server["password"],
            "POSTGRES_DBNAME": name,
        },
        generated,
    )


def timed(label: str, rows: int, scan_s: float, work: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    seconds = time.perf_counter() - started
    rate = rows / seconds
    print(f"| {label} | {rows:,} | {seconds:.2f} | {rate:,.0f} | {scan_s / seconds:.2f} |", flush=True)
    return seconds, result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--keep",
        metavar="NAME",
        help="generate into (or reuse) the external PostgreSQL's database NAME and keep it for later runs",
    )
    parser.add_argument(
        "--generate-only", action="store_true", help="with --keep: generate and seal the history, measure nothing"
    )
    args = parser.parse_args()
    with kept_database(args.keep) if args.keep else _fresh() as (pg, generated):
        env = Settings().event_store_env(pg)
        create_tables(env)
        app = MediaTasks(env=env)
        started = time.perf_counter()
        if generated:
            print(f"reusing the history in database {args.keep} (--events ignored)")
        else:
            tasks = generate(app, args.events)
            if args.keep:
                with app.recorder.datastore.transaction(commit=True) as curs:
                    curs.execute("CREATE TABLE bench_replay_generated ()")
            print(f"generated {tasks:,} tasks in {time.perf_counter() - started:.1f} s")
        head = app.recorder.max_notification_id()
        print(f"{head:,} events")
        # One fixed key (a bench's, not a secret), so a kept history's checkpoints verify in later runs.
        signer = Ed25519Signer(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench/replay.py").digest()))
        seal = PostgresSeal(app.recorder.datastore)
        follower = SealingFollower(app, seal, signer, page=5_000)
        started = time.perf_counter()
        follower.catch_up()
        follower.checkpoint_seconds = 0
        follower.catch_up()  # the last checkpoint at the head
        seal_s = time.perf_counter() - started
        print(
            f"sealing follower catching up (links + a checkpoint every 10,000): {seal_s:.1f} s = "
            f"{head / seal_s:,.0f} events/s"
        )

        if args.generate_only:
            app.close()
            return

        def scan() -> int:
            with psycopg.connect(
                host=pg["POSTGRES_HOST"],
                port=pg["POSTGRES_PORT"],
                user=pg["POSTGRES_USER"],
                password=pg["POSTGRES_PASSWORD"] or None,
                dbname=pg["POSTGRES_DBNAME"],
            ) as conn:
                with conn.cursor(name="scan") as curs:
                    curs.execute(
                        SQL(
                            "SELECT notification_id, originator_id, originator_version, topic, state "
                            "FROM {}.mediatasks_events ORDER BY notification_id"
                        ).format(Identifier("public"))
                    )
                    rows = 0
                    while page := curs.fetchmany(10_000):
                        rows += len(page)
                    return rows

        print("| what | events | s | events/s | ratio to the scan |")
        print("|---|---|---|---|---|")
        started = time.perf_counter()
        rows = scan()
        scan_s = time.perf_counter() - started
        print(
            f"| plain SELECT scan (psycopg, server-side cursor, pages of 10,000) | {rows:,} | {scan_s:.2f} | "
            f"{rows / scan_s:,.0f} | 1.00 |",
            flush=True,
        )
        _, report = timed(
            "invariant replay (decode + every check)",
            head,
            scan_s,
            lambda: replay_invariants(app, refunds_tracked_to=head),
        )
        assert report.ok, report.violations[:3]
        _, chain = timed(
            "chain verification (links, checkpoints, signatures)",
            head,
            scan_s,
            lambda: verify_chain(app, seal=seal, verifier=signer.verifier()),
        )
        assert chain.ok, chain.violations[:3]
        rebuild_s, (old, new, caught_up) = timed(
            "`rebuild` (fold in memory, COPY, indexes after, switch)",
            head,
            scan_s,
            lambda: rebuild(env, app, grace_seconds=0),
        )
        views = construct_views(env, new)
        _, full = timed(
            "full `verify` (replay + checks + chain + read-model fold and comparison; the fold and the "
            "comparison in a second process, the default from 50,000 events)",
            head,
            scan_s,
            lambda: verify(app, views, seal=seal, verifier=signer.verifier(), concurrent=True),
        )
        assert full.ok, full.violations[:3]
        _, single = timed(
            "full `verify` in one process (`concurrent=False`)",
            head,
            scan_s,
            lambda: verify(app, views, seal=seal, verifier=signer.verifier(), concurrent=False),
        )
        assert single.ok, single.violations[:3]
        path = Path(tempfile.mkdtemp(prefix="mt-export-")) / "history.ndjson.zst"

        def export() -> None:
            with export_writer(str(path)) as out:
                write_export(app, seal, out, refunds_tracked_to=head)

        timed("`export` to .ndjson.zst", head, scan_s, export)
        _, offline = timed(
            "`verify-export` of that file (chain + signatures + invariants, no database)",
            head,
            scan_s,
            lambda: verify_export(str(path), signer.verifier()),
        )
        assert offline.ok, offline.violations[:3]
        print(f"export file: {path.stat().st_size / 2**20:,.1f} MiB; {full.summary()}")
        path.unlink()
        views.datastore.close()
        app.close()


@contextmanager
def _fresh() -> Iterator[tuple[dict[str, str], bool]]:
    with database() as pg:
        yield pg, False


if __name__ == "__main__":
    main()
