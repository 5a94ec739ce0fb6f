"""POST /v1/tasks against the same server's GET /healthz ceiling: workers × group commit × connections.

Run: .venv/bin/python bench/http_submit.py [--seconds 10] [--connections 32,128] [--workers 1,2]
                                          [--group-commit off,on]
Dispatch is not running, so only the write path (auth, validation, one save of two events) is measured.
Each (workers, group commit) pair is a fresh server on the same database; for each connection count,
GET /healthz and then POST /v1/tasks run against it, so the ceiling is measured beside each figure.
CPU per request is read from /proc: the service's processes (all workers) and PostgreSQL's.
"""

from __future__ import annotations

import argparse

from _harness import WrkResult, cpu_seconds, database, new_user, service, wrk

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="32,128")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--group-commit", default="off,on")
    parser.add_argument("--users", type=int, default=64, help="submissions are spread over this many users")
    args = parser.parse_args()
    print(f"wrk, {args.seconds} s per run, {args.users} users, dispatch off\n")
    print(f"{'workers':>7} {'group':>5} {'conns':>5}  {'route':<15} {'result':<58} {'ratio':>6} {'on/off':>6}")
    posts: dict[tuple[int, int, str], WrkResult] = {}
    with database() as pg:
        for workers in [int(w) for w in args.workers.split(",")]:
            for mode in args.group_commit.split(","):
                extra = ("--no-dispatch", *(("--workers", str(workers)) if workers > 1 else ()))
                with service(pg, *extra, group_commit=mode) as svc:
                    keys = [new_user(svc.url) for _ in range(args.users)]
                    for connections in [int(c) for c in args.connections.split(",")]:
                        ceiling = wrk(svc.url + "/healthz", connections=connections, seconds=args.seconds)
                        service_before, postgres_before = cpu_seconds(svc.proc.pid)
                        submit = wrk(
                            svc.url + "/v1/tasks",
                            connections=connections,
                            seconds=args.seconds,
                            method="POST",
                            body={"url": TIKTOK, "output_type": "subtitles"},
                            api_keys=keys,
                        )
                        service_after, postgres_after = cpu_seconds(svc.proc.pid)
                        requests = submit.requests_per_second * args.seconds
                        posts[(workers, connections, mode)] = submit
                        ratio = submit.requests_per_second / ceiling.requests_per_second
                        off = posts.get((workers, connections, "off"))
                        on_off = (
                            f"{submit.requests_per_second / off.requests_per_second:6.2f}"
                            if (mode == "on" and off)
                            else ""
                        )
                        print(
                            f"{workers:>7} {mode:>5} {connections:>5}  {'GET /healthz':<15} {ceiling.row():<58} "
                            f"{1:6.2f}",
                            flush=True,
                        )
                        print(
                            f"{workers:>7} {mode:>5} {connections:>5}  {'POST /v1/tasks':<15} {submit.row():<58} "
                            f"{ratio:6.3f} {on_off:>6}  CPU/request: service "
                            f"{(service_after - service_before) / requests * 1e3:.2f} ms, PostgreSQL "
                            f"{(postgres_after - postgres_before) / requests * 1e3:.2f} ms",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
