"""Where the p99 of a submission goes: stalls (no response at all for a while) or queueing, on a quiet
disk and beside another writer, for mediatasks and the naive psycopg peer in one run.

Run: .venv/bin/python bench/response_gaps.py [--seconds 8] [--connections 32] [--writer-mb 1500]

Both systems take the 64-user load of bench/http_submit.py (mediatasks: 1 worker, `serve --no-dispatch
--no-projections` beside a `mediatasks projections` process, on an embedded PostgreSQL of its own), after
2 s of the same load. Each row records the moment every response arrived (wrk, CLOCK_MONOTONIC): the largest
gaps between two consecutive responses are times when nothing at all was answered, with 32 requests in
flight. "beside a disk writer" runs `dd` writing `--writer-mb` MB to a file, over and over, while the row
is measured, in the temporary directory (where the embedded PostgreSQL keeps its data too): what a backup,
a package install or a log rotation on the same disk does to every commit's fsync. The disk column is
every process's writes during the row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from _harness import database, disk_bytes_written, response_seconds, wrk
from http_submit import BODY, api_process, peer, projections_process, submissions, users

from tests.support.postgres import database_url

STALL_MS = 30.0


@contextmanager
def disk_writer(megabytes: int | None) -> Iterator[None]:
    """`dd` writing `megabytes` MB to a scratch file, again and again until the block ends (None: nothing)."""
    if megabytes is None:
        yield
        return
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="mt-gaps-") as folder:
        target = Path(folder) / "written"

        def write() -> None:
            while not stop.is_set():
                subprocess.run(
                    ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={megabytes}"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    check=False,
                )

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()


def measure(label: str, url: str, keys: list[str], args: argparse.Namespace, writer_mb: int | None) -> str:
    submissions(url, args.connections, 2, keys)
    with tempfile.TemporaryDirectory(prefix="mt-gaps-") as folder, disk_writer(writer_mb):
        disk0 = disk_bytes_written()
        result = wrk(
            url + "/v1/tasks",
            connections=args.connections,
            seconds=args.seconds,
            method="POST",
            body=BODY,
            api_keys=keys,
            response_times=Path(folder),
        )
        disk_mb = (disk_bytes_written() - disk0) / 1e6
        times = response_seconds(Path(folder))
    gaps = sorted((b - a) * 1e3 for a, b in zip(times, times[1:], strict=False))
    stalls = [g for g in gaps if g >= STALL_MS]
    where = "beside a disk writer" if writer_mb else "quiet disk"
    row = (
        f"| {label} | {where} | {result.requests_per_second:,.0f} | {result.p50_ms:.1f} | {result.p99_ms:.1f} | "
        f"{gaps[-1]:.1f} | {len(stalls)} | {sum(stalls):.0f} | {disk_mb / args.seconds:.0f} |"
    )
    print(row, file=sys.stderr, flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--writer-mb", type=int, default=1500, help="MB the disk writer writes at each turn")
    args = parser.parse_args()
    rows: list[str] = []
    with database() as pg:
        with peer("psycopg_peer", {"DATABASE_URL": database_url(pg)}) as (url, _):
            keys = users(url, 64)
            for writer in (None, args.writer_mb):
                rows.append(measure("naive FastAPI + psycopg", url, keys, args, writer))
        with ExitStack() as stack:
            stack.enter_context(projections_process(pg))
            svc = stack.enter_context(api_process(pg))
            keys = users(svc.url, 64)
            for writer in (None, args.writer_mb):
                rows.append(measure("mediatasks, 1 worker", svc.url, keys, args, writer))
    print(
        f"wrk, {args.connections} connections, 64 users, {args.seconds} s a row after 2 s of the same load, one run\n"
    )
    print(
        f"| system | disk | req/s | p50 ms | p99 ms | largest gap between responses ms | gaps ≥ {STALL_MS:.0f} ms | "
        "their ms together | disk writes MB/s (whole machine) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
