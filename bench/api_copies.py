"""Two API processes on one database: each user's submissions sent to one of them (as a load balancer that
hashes the API key would), or both taking every user's, beside one process, in alternating rounds of one run.

Run: .venv/bin/python bench/api_copies.py [--rounds 3] [--seconds 6]

Each API process is `serve --no-dispatch --no-projections` beside one `mediatasks projections` process, on an
embedded PostgreSQL of its own; 64 users, 32 connections in all (16 a process with two), the load of
bench/http_submit.py's 64-user row. With two processes writing the same accounts each one's remembered
account is stale whenever the other wrote last (AccountBatches: a refused save, a fresh read, the batch
decided again); with each user's requests sent to one process, neither does. The p50 and p99 of the two-process
rows are each process's (two wrk runs at once: their distributions are not merged).
"""

from __future__ import annotations

import argparse
import threading
from contextlib import ExitStack

from _harness import WrkResult, database
from http_submit import api_process, projections_process, submissions, users


def at_once(loads: list[tuple[str, list[str]]], connections: int, seconds: int) -> list[WrkResult]:
    """One wrk a (url, keys) pair, all at the same time."""
    results: list[WrkResult | None] = [None] * len(loads)

    def run(i: int, url: str, keys: list[str]) -> None:
        results[i] = submissions(url, connections, seconds, keys)

    threads = [threading.Thread(target=run, args=(i, url, keys)) for i, (url, keys) in enumerate(loads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return [r for r in results if r is not None]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=6)
    args = parser.parse_args()
    rows: list[str] = []
    with database() as pg, ExitStack() as stack:
        stack.enter_context(projections_process(pg))
        a, b = (stack.enter_context(api_process(pg)) for _ in range(2))
        keys = users(a.url, 64)
        at_once([(a.url, keys), (b.url, keys)], 16, 3)  # both processes warm, every account known to both
        for n in range(1, args.rounds + 1):
            one = submissions(a.url, 32, args.seconds, keys)
            rows.append(f"| {n} | one process | {one.requests_per_second:,.0f} | {one.p50_ms:.1f} | {one.p99_ms:.1f} |")
            for label, first, second in (
                ("two, each user's requests to one of them", keys[:32], keys[32:]),
                ("two, both taking every user's", keys, keys),
            ):
                ra, rb = at_once([(a.url, first), (b.url, second)], 16, args.seconds)
                rows.append(
                    f"| {n} | {label} | {ra.requests_per_second + rb.requests_per_second:,.0f} | "
                    f"{ra.p50_ms:.1f} / {rb.p50_ms:.1f} | {ra.p99_ms:.1f} / {rb.p99_ms:.1f} |"
                )
            print("\n".join(rows[-3:]), flush=True)
    print(f"\nwrk, 32 connections in all, 64 users, {args.seconds} s a row, rounds in one run\n")
    print("| round | API processes | req/s | p50 ms | p99 ms |")
    print("|---:|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
