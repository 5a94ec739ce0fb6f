"""POST /v1/tasks as one user: a fresh account against one with `--history` earlier tasks, alternated in one service.

Run: .venv/bin/python bench/history_rounds.py [--history 20000] [--rounds 5] [--seconds 4] [--connections 32]
[--profile FILE]
The service is bench/http_submit.py's 1-worker one (`serve --no-dispatch --no-projections` and a
`mediatasks projections` process beside it, limits out of reach, an embedded PostgreSQL of its own);
the history account is written in bulk as there, then the followers are let settle. Each round
measures a fresh user (a new one every round) and the history user back to back, the order flipped
every round, so both rows share the process's state and the machine's drift. Printed: medians over
the rounds of req/s, p99 and CPU per request from /proc (the API process, the projections process,
PostgreSQL), the ratio of the medians and the median of each round's ratio. With --profile, one more
round records the API process (FILE.fresh, FILE.history) and the projections process
(FILE.fresh.projections, FILE.history.projections) with py-spy; bench/profile_summary.py reads them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

from _harness import WrkResult, cpu_seconds, database
from http_submit import (
    api_process,
    postmaster_pid,
    profiled,
    projections_process,
    settle,
    submissions,
    user_with_history,
    users,
)

KINDS = ("fresh", "history")


class Row:
    """One wrk run and the CPU the API process, the projections process and PostgreSQL spent per request."""

    def __init__(self, result: WrkResult, seconds: int, cpu: list[float]) -> None:
        requests = max(1.0, result.requests_per_second * seconds)
        self.result = result
        self.api_ms, self.projections_ms, self.postgres_ms = (c / requests * 1e3 for c in cpu)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--history", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--profile", type=Path, help="py-spy profiles of one more round: FILE.fresh, FILE.history")
    args = parser.parse_args()
    rows: dict[str, list[Row]] = {kind: [] for kind in KINDS}
    with database() as pg, ExitStack() as stack:
        pids = [stack.enter_context(projections_process(pg)).pid, postmaster_pid(pg)]
        svc = stack.enter_context(api_process(pg))
        pids.insert(0, svc.proc.pid)
        history_key = user_with_history(pg, args.history)
        settle(pids)

        def cpu() -> list[float]:
            return [cpu_seconds(pid)[0] for pid in pids]

        def run(kind: str, seconds: int) -> Row:
            key = history_key if kind == "history" else users(svc.url, 1)[0]
            before = cpu()
            result = submissions(svc.url, args.connections, seconds, [key])
            return Row(result, seconds, [after - b for after, b in zip(cpu(), before, strict=True)])

        for kind in KINDS:  # warm-up
            run(kind, 1)
        for n in range(args.rounds):
            for kind in KINDS if n % 2 == 0 else KINDS[::-1]:
                row = run(kind, args.seconds)
                rows[kind].append(row)
                print(
                    f"  round {n + 1} {kind:<7} {row.result.row()}  CPU ms/req: API {row.api_ms:.3f}, "
                    f"projections {row.projections_ms:.3f}, PostgreSQL {row.postgres_ms:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
        if args.profile:
            for kind in KINDS:
                path = args.profile.with_name(f"{args.profile.name}.{kind}")
                with (
                    profiled(pids[0], path, args.seconds),
                    profiled(pids[1], path.with_name(path.name + ".projections"), args.seconds),
                ):
                    print(f"  profiled {kind:<7} {run(kind, args.seconds).result.row()}", file=sys.stderr)
    print(
        f"wrk, {args.connections} connections, {args.seconds} s per row, {args.rounds} rounds alternating a fresh "
        f"account and one with {args.history:,} earlier tasks, 1 user each, 1 uvicorn worker; medians\n"
    )
    print(
        "| account | req/s | p99 ms | API CPU ms/req | projections CPU ms/req | PostgreSQL CPU ms/req | "
        "req/s × fresh (medians) | × fresh, per round: median (min–max) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    fresh_rps = statistics.median(r.result.requests_per_second for r in rows["fresh"])
    for kind in KINDS:
        mine = rows[kind]
        rps = statistics.median(r.result.requests_per_second for r in mine)
        paired = [
            a.result.requests_per_second / b.result.requests_per_second
            for a, b in zip(mine, rows["fresh"], strict=True)
        ]
        print(
            f"| {kind} | {rps:,.0f} | {statistics.median(r.result.p99_ms for r in mine):.1f} | "
            f"{statistics.median(r.api_ms for r in mine):.3f} | {statistics.median(r.projections_ms for r in mine):.3f} | "
            f"{statistics.median(r.postgres_ms for r in mine):.3f} | {rps / fresh_rps:.3f} | "
            f"{statistics.median(paired):.3f} ({min(paired):.2f}–{max(paired):.2f}) |"
        )


if __name__ == "__main__":
    main()
