"""POST /v1/tasks of mediatasks next to two naive peers, in one run, printed as one table.

Run: .venv/bin/python bench/http_submit.py [--seconds 8] [--warmup 2] [--connections 32] [--history 20000]
[--only mediatasks] [--workers 1] [--telemetry true|false] [--profile FILE]
(--profile: py-spy records the GIL holder of the 64-user row, 1 worker, in FILE, the projections
process's in FILE.projections and the 1-user row's in FILE.1user; read them with bench/profile_summary.py.) The peers (bench/peers/) take the same JSON body and give the same answer: FastAPI + psycopg (one
transaction: insert task, insert ledger row, conditional balance update) and FastAPI + eventsourcing
(one `save(task, account)` per request), each under the same uvicorn. mediatasks runs
`serve --no-dispatch --no-projections` (the write path only) with a `mediatasks projections` process
beside it (as `serve` runs them with 2 workers), with 1 and 2 uvicorn workers; its per-key rate
limits and active-task cap are set out of reach (the peers have none), but still checked on every
request. "1 user" sends every request with one API key (one busy account), "64 users" spreads them over 64.
Each row is measured after `--warmup` seconds of the same load (a steady state), except the cold rows: 64
users created just before, measured from their first request (what a service's first seconds with new
users cost); each system's 64-user row follows its cold row with the same users. The history rows are one
user whose account already has `--history` tasks, written in bulk before the run (saves of 500 tasks
with their charges, then a snapshot), measured in the order fresh user, history user, history user, fresh user (HISTORY_ORDER: a drift of
the machine's speed, or the slower first rows after the bulk write, weighs on both kinds alike), the mean
of the history rows compared with the mean of the fresh ones. CPU per request from /proc: the server's processes (the projections process
included; the progress lines on stderr split it, the API process first), and the PostgreSQL server's (an embedded
server of its own, so other load on the machine is not counted). Each progress line ends with the machine's disk
writes during the row (every process's): a row beside another writer has a tail of commit stalls
(bench/response_gaps.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

os.environ.setdefault("MEDIATASKS_TEST_POSTGRES", "embedded")  # a server of our own: its CPU is ours

import httpx
import psycopg
from _harness import ROOT, WrkResult, cpu_seconds, database, disk_bytes_written, service, service_env, wrk

from application.mediatasks import MediaTasks
from domain.tasks import MediaTask
from infrastructure.settings import Settings
from tests.support.postgres import database_url
from tests.support.service_process import ServiceProcess, free_port

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
BODY = {"url": TIKTOK, "output_type": "subtitles"}
ADMIN = {"Authorization": "Bearer bench-admin-token"}
SCHEMA = "bench_submit"
COLD = "64 new users, cold: their first seconds"
HISTORY_ORDER = ("fresh", "history", "history", "fresh")
OUT_OF_REACH = {"rate_limit_submissions": "1000000/second", "max_active_tasks": "1000000000"}


@contextmanager
def peer(module: str, env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            f"{module}:app",
            "--app-dir",
            str(ROOT / "bench" / "peers"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, f"{module} did not start"
        time.sleep(0.2)
    try:
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(30)


def submissions(url: str, connections: int, seconds: int, keys: list[str], path: str = "/v1/tasks") -> WrkResult:
    """wrk POSTing the bench's submission to `url` + `path`, each request as one of `keys` picked at random."""
    return wrk(url + path, connections=connections, seconds=seconds, method="POST", body=BODY, api_keys=keys)


def api_process(pg: dict[str, str], **settings: str) -> AbstractContextManager[ServiceProcess]:
    """The 1-worker API process of the rows: `serve --no-dispatch --no-projections`, limits out of reach
    (run `projections_process` beside it)."""
    return service(pg, "--no-dispatch", "--no-projections", postgres_schema=SCHEMA, **{**OUT_OF_REACH, **settings})


@contextmanager
def projections_process(pg: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """`mediatasks projections` beside a `serve --no-projections`: the read model and the refund issuer."""
    env = service_env(pg, postgres_schema=SCHEMA)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MEDIATASKS_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "infrastructure.entrypoints.cli", "projections"],
        env={**clean, **env},
        cwd=Path(env["MEDIATASKS_DATA_DIR"]).parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


@contextmanager
def profiled(pid: int, path: Path | None, seconds: int) -> Iterator[None]:
    """py-spy records which thread holds the GIL, and its stack, while the block runs (the process's one core)."""
    if path is None:
        yield
        return
    record = [
        str(Path(sys.executable).with_name("py-spy")),
        "record",
        "--pid",
        str(pid),
        "--rate",
        "250",
        "--threads",
        "--gil",
        "--full-filenames",
    ]
    proc = subprocess.Popen(
        [*record, "--duration", str(seconds), "--format", "raw", "--output", str(path), "--nonblocking"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        proc.wait(seconds + 30)


def postmaster_pid(pg: dict[str, str]) -> int:
    with psycopg.connect(database_url(pg)) as conn:  # read while the backend lives (it ends with the connection)
        backend = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        return int(Path(f"/proc/{backend}/stat").read_text().rsplit(")", 1)[1].split()[1])


def users(url: str, n: int, credits: int = 1_000_000_000) -> list[str]:
    keys = []
    for _ in range(n):
        r = httpx.post(
            url + "/v1/admin/users",
            json={"user_id": "b" + uuid.uuid4().hex[:12], "credits": credits},
            headers=ADMIN,
            timeout=30,
        )
        r.raise_for_status()
        keys.append(r.json()["api_key"])
    return keys


def user_with_history(pg: dict[str, str], tasks: int) -> str:
    """A user whose account has `tasks` earlier tasks (and charges), written in bulk; its API key."""
    app = MediaTasks(env=Settings(postgres_schema=SCHEMA).event_store_env(pg))
    user = app.create_user("history" + uuid.uuid4().hex[:8], 1_000_000_000)
    account = app.get_account(user.user_id)
    for start in range(0, tasks, 500):
        batch = [
            MediaTask.start(
                user_id=user.user_id,
                idempotency_key=f"bulk-{i}",
                url=TIKTOK,
                platform="tiktok",
                output_type="subtitles",
                languages=[],
                credits=1,
                requested_at=app.clock(),
                max_attempts=3,
            )
            for i in range(start, min(tasks, start + 500))
        ]
        for task in batch:
            account.charge(task.id, 1, 1)
        app.save(*batch, account)
    latest = next(iter(app.snapshots.get(account.id, desc=True, limit=1)), None)  # type: ignore[union-attr]
    if latest is None or latest.originator_version < account.version:  # the last save may have taken it
        app.take_snapshot(account.id)
    app.close()
    return user.api_key


def settle(pids: Sequence[int], timeout: float = 180.0) -> None:
    """Wait until the followers have folded the bulk history (the service and PostgreSQL idle for a
    second): the history row measures submissions against that account, not the catch-up on it."""
    deadline, quiet = time.monotonic() + timeout, 0
    used = sum(cpu_seconds(pid)[0] for pid in pids)
    while quiet < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = sum(cpu_seconds(pid)[0] for pid in pids)
        quiet, used = (quiet + 1 if now - used < 0.05 else 0), now
    if quiet < 2:
        print(f"  the followers were still busy after {timeout:.0f} s", file=sys.stderr)


class Table:
    def __init__(self, seconds: int, connections: int, postgres: int, warmup: int) -> None:
        self.seconds, self.connections, self.postgres, self.warmup = seconds, connections, postgres, warmup
        self.rows: list[tuple[str, int, str, WrkResult, float, float]] = []
        self.history_ratio: float | None = None

    def measure(
        self,
        system: str,
        workers: int,
        who: str,
        server_pids: Sequence[int],
        url: str,
        keys: list[str] | None,
        path: str = "/v1/tasks",
        *,
        warm: bool = True,
    ) -> WrkResult:
        """One row: `warmup` seconds of the same load first, not measured (unless not `warm`), then the row."""

        def each_cpu() -> list[float]:
            return [cpu_seconds(pid)[0] for pid in server_pids]

        def load(seconds: int) -> WrkResult:
            if keys is None:
                return wrk(url + path, connections=self.connections, seconds=seconds)
            return submissions(url, self.connections, seconds, keys, path)

        if warm and self.warmup:
            load(self.warmup)
        each0, pg0, disk0 = each_cpu(), cpu_seconds(self.postgres)[0], disk_bytes_written()
        result = load(self.seconds)
        disk_mb_s = (disk_bytes_written() - disk0) / 1e6 / self.seconds
        requests = max(1.0, result.requests_per_second * self.seconds)
        each_ms = [(now - before) / requests * 1e3 for now, before in zip(each_cpu(), each0, strict=True)]
        service_ms = sum(each_ms)
        pg_ms = (cpu_seconds(self.postgres)[0] - pg0) / requests * 1e3
        self.rows.append((system, workers, who, result, service_ms, pg_ms))
        split = " + ".join(f"{ms:.2f}" for ms in each_ms)
        print(
            f"  {system} ×{workers} {who}: {result.row()}  CPU ms/req: service {split}, PostgreSQL {pg_ms:.2f}; "
            f"disk writes {disk_mb_s:.0f} MB/s",
            file=sys.stderr,
            flush=True,
        )
        return result

    def print(self, baseline: dict[str, float]) -> None:
        print(
            f"wrk, {self.connections} connections, {self.seconds} s per row after {self.warmup} s of the same load "
            "(cold rows: none), one run\n"
        )
        print(
            "| system | uvicorn workers | users | req/s | p50 ms | p99 ms | service CPU ms/req | PostgreSQL CPU "
            "ms/req | × psycopg peer (same users) | × eventsourcing peer |"
        )
        print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|")
        for system, workers, who, r, service_ms, pg_ms in self.rows:
            key = "64 users" if who.startswith("64") else "1 user" if who.startswith(("1 user", "history")) else who
            vs_pg = r.requests_per_second / baseline.get(f"psycopg {key}", float("nan"))
            vs_es = r.requests_per_second / baseline.get(f"eventsourcing {key}", float("nan"))
            errors = f" ({r.non_2xx} non-2xx)" if r.non_2xx else ""
            print(
                f"| {system} | {workers} | {who} | {r.requests_per_second:,.0f}{errors} | {r.p50_ms:.1f} | "
                f"{r.p99_ms:.1f} | {service_ms:.2f} | {pg_ms:.2f} | {vs_pg:.2f} | {vs_es:.2f} |"
            )
        if self.history_ratio is not None:
            print(
                f"\nhistory rows' mean × the fresh 1-user rows' mean (fresh, history, history, fresh): "
                f"{self.history_ratio:.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of each row's load before it is measured")
    parser.add_argument("--history", type=int, default=20_000)
    parser.add_argument("--only", choices=["all", "mediatasks"], default="all", help="mediatasks: no peers")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn workers of the rows")
    parser.add_argument("--telemetry", choices=["true", "false"], default="true")
    parser.add_argument("--profile", type=Path, help="py-spy's collapsed stacks of the 64-user row, 1 worker, here")
    args = parser.parse_args()
    with database() as pg:
        table = Table(args.seconds, args.connections, postmaster_pid(pg), args.warmup)
        baseline: dict[str, float] = {}
        pg_url = database_url(pg)
        if args.only == "all":
            measure_peers(table, baseline, pg, pg_url)
        for workers in args.workers:
            with ExitStack() as stack:
                if workers == 1:  # with more, `serve` runs the projections in a process of its own
                    extra: tuple[str, ...] = ("--no-dispatch", "--no-projections")
                    pids = [stack.enter_context(projections_process(pg)).pid]
                else:
                    extra, pids = ("--no-dispatch", "--workers", str(workers)), []
                svc = stack.enter_context(
                    service(pg, *extra, postgres_schema=SCHEMA, telemetry=args.telemetry, **OUT_OF_REACH)
                )
                pids.insert(0, svc.proc.pid)
                if workers == 1:
                    table.measure("mediatasks GET /healthz", 1, "-", pids, svc.url, None, path="/healthz")
                profile = args.profile if workers == 1 else None
                one_user = users(svc.url, 1)
                with profiled(svc.proc.pid, profile and profile.with_name(profile.name + ".1user"), args.seconds):
                    table.measure("mediatasks", workers, "1 user", pids, svc.url, one_user)
                keys = users(svc.url, 64)
                table.measure("mediatasks", workers, COLD, pids, svc.url, keys, warm=False)
                projections_profile = profile and profile.with_name(profile.name + ".projections")
                with (
                    profiled(svc.proc.pid, profile, args.seconds),
                    profiled(pids[-1], projections_profile, args.seconds),
                ):
                    table.measure("mediatasks", workers, "64 users", pids, svc.url, keys, warm=False)  # after COLD
                if workers == 1 and args.history:
                    key = user_with_history(pg, args.history)
                    settle(pids + [table.postgres])
                    fresh, history = [], []
                    for n, row in enumerate(HISTORY_ORDER, 1):  # fresh, history, history, fresh: a drift weighs on both
                        if row == "fresh":
                            who, row_keys, rows = f"1 user, fresh (row {n})", users(svc.url, 1), fresh
                        else:
                            who, row_keys, rows = (
                                f"history: 1 user with {args.history:,} earlier tasks (row {n})",
                                [key],
                                history,
                            )
                        rows.append(table.measure("mediatasks", 1, who, pids, svc.url, row_keys))
                    table.history_ratio = statistics.mean(r.requests_per_second for r in history) / statistics.mean(
                        r.requests_per_second for r in fresh
                    )
        table.print(baseline)


def measure_peers(table: Table, baseline: dict[str, float], pg: dict[str, str], pg_url: str) -> None:
    with peer("psycopg_peer", {"DATABASE_URL": pg_url}) as (url, proc):
        for who, n in (("1 user", 1), ("64 users", 64)):
            keys = users(url, n)
            if n == 64:  # the warm row right after the cold one, as mediatasks'
                table.measure("naive FastAPI + psycopg", 1, COLD, [proc.pid], url, keys, warm=False)
            baseline[f"psycopg {who}"] = table.measure(
                "naive FastAPI + psycopg", 1, who, [proc.pid], url, keys, warm=n != 64
            ).requests_per_second
    es_env = {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "CREATE_TABLE": "true",
        "POSTGRES_SCHEMA": "peer_es",
        **{k: v for k, v in pg.items()},
        "POSTGRES_POOL_SIZE": "10",
        "POSTGRES_MAX_OVERFLOW": "20",
    }
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS peer_es")
    with peer("eventsourcing_peer", es_env) as (url, proc):
        for who, n in (("1 user", 1), ("64 users", 64)):
            keys = users(url, n)
            if n == 64:
                table.measure("naive FastAPI + eventsourcing", 1, COLD, [proc.pid], url, keys, warm=False)
            baseline[f"eventsourcing {who}"] = table.measure(
                "naive FastAPI + eventsourcing", 1, who, [proc.pid], url, keys, warm=n != 64
            ).requests_per_second


if __name__ == "__main__":
    main()
