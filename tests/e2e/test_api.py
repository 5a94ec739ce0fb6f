"""The HTTP API against the real server process: commands, reads, errors, isolation."""

from __future__ import annotations

import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.e2e.conftest import RunningService

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ&utm_source=share"


def assert_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["message"]
    return body["error"]


def test_user_creation_submit_and_read_your_writes(service: RunningService) -> None:
    user_id, key = service.new_user(10)
    assert key.startswith("mt_") and len(key) > 40
    with service.client(key) as c:
        r = c.post("/v1/tasks", json={"url": YOUTUBE, "output_type": "video_and_subtitles", "languages": ["en"]})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["status"] == "queued" and accepted["credits_charged"] == 3
        assert r.headers["Location"] == f"/v1/tasks/{accepted['task_id']}"
        task = c.get(f"/v1/tasks/{accepted['task_id']}")  # right after the 202
        assert task.status_code == 200, task.text
        body = task.json()
        assert body["platform"] == "youtube" and body["url"] == "https://youtube.com/watch?v=dQw4w9WgXcQ"
        assert body["status"] == "queued" and body["progress"] == 0 and body["attempts"] == 0
        account = c.get("/v1/account").json()
        assert account["user_id"] == user_id and account["balance"] == 7
        assert [(e["kind"], e["amount"]) for e in account["entries"]] == [("charge", -3), ("grant", 10)]
        assert account["entries"][0]["task_id"] == accepted["task_id"]


def test_admin_grant_and_errors(service: RunningService) -> None:
    user_id, key = service.new_user(1)
    r = httpx.post(
        service.url + f"/v1/admin/users/{user_id}/credits", json={"amount": 5, "reason": "promo"}, headers=service.admin
    )
    assert r.status_code == 200 and r.json() == {"user_id": user_id, "balance": 6}
    assert_error(
        httpx.post(service.url + "/v1/admin/users/nobody/credits", json={"amount": 5}, headers=service.admin),
        404,
        "user_not_found",
    )
    assert_error(
        httpx.post(service.url + f"/v1/admin/users/{user_id}/credits", json={"amount": -5}, headers=service.admin),
        422,
        "validation_failed",
    )
    assert_error(
        httpx.post(service.url + "/v1/admin/users", json={"user_id": user_id}, headers=service.admin),
        409,
        "user_already_exists",
    )
    assert_error(
        httpx.post(service.url + "/v1/admin/users", json={"user_id": "bad id!"}, headers=service.admin),
        422,
        "invalid_user_id",
    )
    assert_error(
        httpx.post(service.url + "/v1/admin/users", json={"user_id": "x"}, headers={"Authorization": f"Bearer {key}"}),
        401,
        "unauthorized",
    )
    assert_error(httpx.post(service.url + "/v1/admin/users", json={"user_id": "x"}), 401, "unauthorized")


def test_error_bodies_for_402_409_422_401_404_405_413(service: RunningService) -> None:
    _, key = service.new_user(1)
    with service.client(key) as c:
        err = assert_error(
            c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "video"}), 402, "insufficient_credits"
        )
        assert err["details"] == {"balance": 1, "price": 2}
        assert c.get("/v1/account").json()["balance"] == 1  # nothing written
        headers = {"Idempotency-Key": "k1"}
        assert c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}, headers=headers).status_code == 202
        assert_error(
            c.post("/v1/tasks", json={"url": YOUTUBE, "output_type": "subtitles"}, headers=headers),
            409,
            "idempotency_key_reused",
        )
        assert_error(c.post("/v1/tasks", json={"url": "ftp://x", "output_type": "subtitles"}), 422, "invalid_url")
        assert_error(
            c.post("/v1/tasks", json={"url": "https://example.com/a.mp4", "output_type": "subtitles"}),
            422,
            "unsupported_url",
        )
        err = assert_error(
            c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "podcast"}), 422, "validation_failed"
        )
        assert err["details"][0]["loc"] == ["body", "output_type"]
        assert_error(
            c.post("/v1/tasks", content=b"{not json", headers={"Content-Type": "application/json"}),
            422,
            "validation_failed",
        )
        assert_error(
            c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "video"}, headers={"Idempotency-Key": "x" * 256}),
            422,
            "validation_failed",
        )
        assert_error(c.get(f"/v1/tasks/{uuid.uuid4()}"), 404, "task_not_found")
        assert_error(c.get("/v1/tasks/not-a-uuid"), 422, "validation_failed")
        assert_error(c.get("/v1/nothing-here"), 404, "not_found")
        assert_error(c.delete("/v1/tasks"), 405, "method_not_allowed")
        big = {"url": TIKTOK, "output_type": "video", "languages": ["en"] * 5000}
        assert_error(c.post("/v1/tasks", json=big), 413, "payload_too_large")
        chunks = iter([json.dumps(big).encode()[i : i + 4096] for i in range(0, len(json.dumps(big)), 4096)])
        assert_error(
            c.post("/v1/tasks", content=chunks, headers={"Content-Type": "application/json"}), 413, "payload_too_large"
        )  # chunked: no Content-Length, counted while reading
        assert_error(c.get("/v1/tasks", params={"cursor": "garbage"}), 422, "invalid_cursor")
    assert_error(
        httpx.get(service.url + "/v1/tasks", headers={"Authorization": "Bearer mt_wrong"}), 401, "unauthorized"
    )
    assert_error(httpx.get(service.url + "/v1/account"), 401, "unauthorized")


def test_idempotency_sequential_and_twenty_concurrent(service: RunningService) -> None:
    _, key = service.new_user(10)
    body = {"url": TIKTOK, "output_type": "video"}
    with service.client(key) as c:
        first = c.post("/v1/tasks", json=body, headers={"Idempotency-Key": "seq"})
        again = c.post("/v1/tasks", json=body, headers={"Idempotency-Key": "seq"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert first.json() == again.json() and again.headers["Idempotent-Replayed"] == "true"
        no_key = [c.post("/v1/tasks", json=body).json()["task_id"] for _ in range(2)]
        assert len(set(no_key)) == 2
    barrier = threading.Barrier(20)

    def post(_: int) -> httpx.Response:
        with service.client(key) as c:
            barrier.wait()
            return c.post("/v1/tasks", json=body, headers={"Idempotency-Key": "burst"})

    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(post, range(20)))
    assert sorted({r.status_code for r in responses}) in ([200, 202], [202])
    assert sum(r.status_code == 202 for r in responses) == 1
    assert len({r.json()["task_id"] for r in responses}) == 1
    with service.client(key) as c:
        assert c.get("/v1/account").json()["balance"] == 10 - 2 * 4


def test_list_pagination_and_status_filter(service: RunningService) -> None:
    _, key = service.new_user(20)
    with service.client(key) as c:
        ids = [
            c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"] for _ in range(7)
        ]
        for task_id in ids:
            assert c.get(f"/v1/tasks/{task_id}").status_code == 200
        seen, cursor = [], None
        while True:
            params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v1/tasks", params=params).json()
            seen += [t["task_id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids))
        assert [
            t["task_id"] for t in c.get("/v1/tasks", params={"status": "queued", "limit": 100}).json()["tasks"]
        ] == list(reversed(ids))
        assert c.get("/v1/tasks", params={"status": "extracted"}).json() == {"tasks": [], "next_cursor": None}
        assert_error(c.get("/v1/tasks", params={"status": "bogus"}), 422, "validation_failed")
        assert_error(c.get("/v1/tasks", params={"limit": 0}), 422, "validation_failed")


def test_history_lists_every_event_with_positions(service: RunningService) -> None:
    _, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        history = c.get(f"/v1/tasks/{task_id}/history").json()
    assert history["task_id"] == task_id
    [started] = history["events"]
    assert (started["type"], started["version"]) == ("Started", 1)
    assert started["position"] >= 1 and started["data"]["output_type"] == "subtitles"
    assert "api_key" not in str(history) and key not in str(history)


def test_another_users_task_is_404_on_every_route(service: RunningService) -> None:
    _, owner = service.new_user(5)
    _, other = service.new_user(5)
    with service.client(owner) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
    with service.client(other) as c:
        for method, path in [("GET", ""), ("GET", "/history"), ("GET", "/events"), ("POST", "/retry")]:
            assert_error(c.request(method, f"/v1/tasks/{task_id}{path}"), 404, "task_not_found")
        assert c.get("/v1/tasks").json()["tasks"] == []


def test_retry_of_a_task_that_has_not_failed_is_409(service: RunningService) -> None:
    _, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        assert_error(c.post(f"/v1/tasks/{task_id}/retry"), 409, "task_not_retryable")


def test_health_and_readiness(service: RunningService) -> None:
    assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(service.url + "/readyz").json()
    assert ready["status"] == "ready"
