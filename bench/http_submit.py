"""POST /v1/tasks against the same server's GET /healthz ceiling, with 1 and 2 uvicorn workers.

Run: .venv/bin/python bench/http_submit.py [--seconds 10] [--connections 32]
Dispatch is not running, so only the write path (auth, validation, one save of two events) is measured.
"""

from __future__ import annotations

import argparse

from _harness import database, new_user, service, wrk

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--users", type=int, default=64, help="submissions are spread over this many users")
    args = parser.parse_args()
    print(f"wrk, {args.connections} connections, {args.seconds} s per run, {args.users} users\n")
    print(f"{'workers':>7}  {'route':<16} {'result':<60} ratio")
    with database() as pg:
        for workers in [int(w) for w in args.workers.split(",")]:
            extra = ("--no-dispatch", *(("--workers", str(workers)) if workers > 1 else ()))
            with service(pg, *extra) as svc:
                keys = [new_user(svc.url) for _ in range(args.users)]
                ceiling = wrk(svc.url + "/healthz", connections=args.connections, seconds=args.seconds)
                submit = wrk(svc.url + "/v1/tasks", connections=args.connections, seconds=args.seconds,
                             method="POST", body={"url": TIKTOK, "output_type": "subtitles"}, api_keys=keys)
                print(f"{workers:>7}  {'GET /healthz':<16} {ceiling.row():<60} 1.00")
                ratio = submit.requests_per_second / ceiling.requests_per_second
                print(f"{workers:>7}  {'POST /v1/tasks':<16} {submit.row():<60} {ratio:.3f}")


if __name__ == "__main__":
    main()
