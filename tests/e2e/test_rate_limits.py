"""Rate limits and the active-task cap against real processes: memory storage in one worker, Redis in two."""

from __future__ import annotations

import re
import socket
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.e2e.conftest import RunningService, running_service

REDIS = ("127.0.0.1", 6379)
PRICE = 1  # subtitles


def redis_reachable() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=1) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def submit(service: RunningService, key: str) -> httpx.Response:
    """One submission on a connection of its own (so that several workers share the requests)."""
    body = {"url": f"https://www.tiktok.com/@x/video/{uuid.uuid4().int % 10**18}", "output_type": "subtitles"}
    return httpx.post(service.url + "/v1/tasks", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def balance(service: RunningService, key: str) -> int:
    with service.client(key) as c:
        return c.get("/v1/account").json()["balance"]


def assert_limited(r: httpx.Response, kind: str, quota: int) -> None:
    assert r.status_code == 429, r.text
    error = r.json()["error"]
    assert error["code"] == "rate_limited" and error["details"]["kind"] == kind
    assert 1 <= int(r.headers["Retry-After"]) <= 60
    assert r.headers["RateLimit-Policy"] == f'"{kind}";q={quota};w=60'
    assert re.fullmatch(rf'"{kind}";r=0;t=\d+', r.headers["RateLimit"]), r.headers["RateLimit"]


def over_the_limit(service: RunningService, quota: int, extra: int) -> None:
    """`quota + extra` concurrent submissions of one key: exactly `extra` 429s, each charged nothing."""
    _, key = service.new_user(1000)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: submit(service, key), range(quota + extra)))
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {202: quota, 429: extra}, [r.text for r in answers if r.status_code not in (202, 429)]
    for r in answers:
        if r.status_code == 429:
            assert_limited(r, "submissions", quota)
        else:
            assert r.headers["RateLimit-Policy"] == f'"submissions";q={quota};w=60'
            assert re.fullmatch(r'"submissions";r=\d+;t=\d+', r.headers["RateLimit"])
    time.sleep(0.5)
    assert balance(service, key) == 1000 - quota * PRICE
    with service.client(key) as c:
        tasks = c.get("/v1/tasks", params={"limit": 100}).json()["tasks"]
    assert len(tasks) == quota  # nothing was written for a refused submission


def test_memory_storage_one_worker(pg_database_one: dict[str, str], tmp_path: Path) -> None:
    settings = {
        "dispatch": "none",
        "rate_limit_storage": "memory://",
        "rate_limit_submissions": "6/minute",
        "rate_limit_reads": "10/minute",
        "max_active_tasks": "100",
    }
    with running_service(pg_database_one, tmp_path, **settings) as service:
        over_the_limit(service, quota=6, extra=5)

        _, key = service.new_user(5)
        with service.client(key) as c:
            answers = [c.get("/v1/webhooks") for _ in range(12)]
        assert [r.status_code for r in answers] == [200] * 10 + [429] * 2
        assert answers[0].headers["RateLimit"].startswith('"reads";r=9;t=')
        assert_limited(answers[-1], "reads", 10)

        # A user's own limits, set by an operator, and the active-task cap (tasks stay queued here).
        user_id, key = service.new_user(50)
        r = httpx.patch(
            service.url + f"/v1/admin/users/{user_id}",
            headers=service.admin,
            json={"max_active_tasks": 2, "rate_limit_submissions": "4/minute"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["max_active_tasks"] == 2 and sorted(r.json()["overridden"]) == [
            "max_active_tasks",
            "rate_limit_submissions",
        ]
        assert (
            httpx.patch(
                service.url + "/v1/admin/users/nobody", headers=service.admin, json={"max_active_tasks": 2}
            ).status_code
            == 404
        )
        assert (
            httpx.patch(
                service.url + f"/v1/admin/users/{user_id}", headers=service.admin, json={"rate_limit_reads": "lots"}
            ).status_code
            == 422
        )
        assert [submit(service, key).status_code for _ in range(2)] == [202, 202]
        with service.client(key) as c:
            deadline = time.monotonic() + 10
            while len(c.get("/v1/tasks").json()["tasks"]) < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
        capped = submit(service, key)
        assert capped.status_code == 429 and capped.json()["error"]["code"] == "too_many_active_tasks", capped.text
        assert capped.json()["error"]["details"] == {"active": 2, "limit": 2}
        assert capped.headers["Retry-After"] and capped.headers["RateLimit-Policy"] == '"submissions";q=4;w=60'
        assert balance(service, key) == 50 - 2 * PRICE


def test_limits_hold_across_two_workers(pg_database_one: dict[str, str], tmp_path: Path) -> None:
    """Two uvicorn workers share the counters in Redis (the memory storage in one worker if there is no Redis)."""
    shared = redis_reachable()
    storage = f"redis://{REDIS[0]}:{REDIS[1]}/0" if shared else "memory://"
    args = ("--workers", "2") if shared else ()
    settings = {
        "dispatch": "none",
        "rate_limit_storage": storage,
        "rate_limit_submissions": "7/minute",
        "max_active_tasks": "100",
    }
    with running_service(pg_database_one, tmp_path, *args, **settings) as service:
        print(f"rate limits on {storage} with {2 if shared else 1} worker(s)")
        over_the_limit(service, quota=7, extra=9)


def test_only_submissions_and_retries_count_as_submissions() -> None:
    """The kind of a request: only POST /v1/tasks and retries are submissions."""
    from starlette.requests import Request

    from infrastructure.api.rate_limits import READS, SUBMISSIONS, _kind

    def request(method: str, p: str) -> Request:
        return Request(
            {
                "type": "http",
                "method": method,
                "path": p,
                "query_string": b"",
                "headers": [],
                "server": ("t", 80),
                "scheme": "http",
                "root_path": "",
            }
        )

    assert _kind(request("GET", "/v1/tasks")) == READS
    assert _kind(request("GET", "/v1/account")) == READS
    assert _kind(request("POST", "/v1/tasks")) == SUBMISSIONS
    assert _kind(request("POST", f"/v1/tasks/{uuid.uuid4()}/retry")) == SUBMISSIONS
    assert _kind(request("POST", f"/v1/tasks/{uuid.uuid4()}/stream-token")) == READS
