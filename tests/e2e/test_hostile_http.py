"""Hostile clients against the real server process (issue 14's HTTP findings): each answer is a documented 4xx."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from uuid import uuid4

import httpx
import pytest

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform
from tests.support.sse import read_sse

HEADER_TIMEOUT = 2
BODY_TIMEOUT = 2
AUTH_FAILURES = 5


@pytest.fixture(scope="module")
def hostile(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(
        platform,
        workers="1",
        sse_ping_seconds="1",
        header_timeout_seconds=str(HEADER_TIMEOUT),
        body_timeout_seconds=str(BODY_TIMEOUT),
        auth_failures_per_minute=str(AUTH_FAILURES),
        auth_failure_delay_seconds="0.05",
        max_active_tasks="100",  # the stream test keeps 21 tasks of one user queued
    )
    with running_service(pg_database_one, tmp_path_factory.mktemp("hostile"), **settings) as running:
        yield running


@pytest.fixture(scope="module")
def extracted(hostile: RunningService, platform: FakePlatform) -> tuple[str, str]:
    """(api key, task id) of a finished task that stored a video and subtitles."""
    _, key = hostile.new_user(10)
    with hostile.client(key) as c:
        r = c.post(
            "/v1/tasks",
            json={"url": platform.media_url("ok"), "output_type": "video_and_subtitles", "languages": ["en"]},
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        deadline = time.monotonic() + 60
        while (task := c.get(f"/v1/tasks/{task_id}").json())["status"] not in ("extracted", "failed"):
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
    assert task["status"] == "extracted", task
    return key, task_id


def from_address(address: str, **headers: str) -> dict[str, str]:
    """Headers of a request from `address` (uvicorn trusts X-Forwarded-For from loopback: a proxy's address)."""
    return {"X-Forwarded-For": address, **headers}


def raw_answer(sock: socket.socket, timeout: float = 10) -> bytes:
    """Everything the server sends until it closes the connection."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def connect(service: RunningService) -> socket.socket:
    return socket.create_connection(("127.0.0.1", service.process.port), timeout=10)


def test_an_8_mib_header_gets_431_and_the_json_error(hostile: RunningService) -> None:
    with connect(hostile) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(128):
                sock.sendall(b"a" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = raw_answer(sock)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 431"), answer[:200]
    assert b'"code": "headers_too_large"' in body


def test_too_many_header_fields_get_431(hostile: RunningService) -> None:
    many = {f"x-h{i}": "1" for i in range(150)}
    r = httpx.get(hostile.url + "/healthz", headers=many, timeout=10)
    assert r.status_code == 431
    assert r.json()["error"]["code"] == "headers_too_large"
    assert httpx.get(hostile.url + "/healthz", headers={"x-h": "a" * 8000}, timeout=10).status_code == 200


def test_a_slowloris_client_is_cut_after_the_header_timeout_while_healthz_answers(hostile: RunningService) -> None:
    slow = [connect(hostile) for _ in range(50)]
    idle = connect(hostile)  # connects and never sends a byte
    started = time.monotonic()
    try:
        for sock in slow:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        for _ in range(3):  # a header line now and then, never the blank line that ends them
            time.sleep(0.5)
            assert httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200
            for sock in slow:
                sock.sendall(b"X-Slow: 1\r\n")
        answers = [raw_answer(sock, timeout=HEADER_TIMEOUT + 10) for sock in slow]
        cut_after = time.monotonic() - started
        assert all(a.startswith(b"HTTP/1.1 408") for a in answers), answers[0][:200]
        assert raw_answer(idle, timeout=HEADER_TIMEOUT + 10).startswith(b"HTTP/1.1 408")
        assert HEADER_TIMEOUT - 0.5 <= cut_after < HEADER_TIMEOUT + 10
    finally:
        for sock in [*slow, idle]:
            sock.close()
    assert httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200


def test_a_body_sent_slowly_is_cut_after_the_body_timeout(hostile: RunningService) -> None:
    _, key = hostile.new_user(1)
    with connect(hostile) as sock:
        sock.sendall(
            f"POST /v1/tasks HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{".encode()
        )
        started = time.monotonic()
        answer = raw_answer(sock, timeout=BODY_TIMEOUT + 10)
        waited = time.monotonic() - started
    assert BODY_TIMEOUT - 0.5 <= waited < BODY_TIMEOUT + 10, waited
    assert answer == b"", "closed without an answer: the route saw a disconnect"
    assert httpx.get(hostile.url + "/healthz", timeout=5).status_code == 200


def test_the_21st_live_stream_of_one_user_gets_429_and_a_closed_one_frees_its_place(service: RunningService) -> None:
    user_id, key = service.new_user(30)
    _, other_key = service.new_user(1)
    # 21 tasks stay queued: above the default cap of 20 active tasks (which only a lagging read model let by)
    r = httpx.patch(f"{service.url}/v1/admin/users/{user_id}", json={"max_active_tasks": 30}, headers=service.admin)
    assert r.status_code == 200, r.text
    with service.client(key) as c, service.client(other_key) as other, ExitStack() as streams:
        # one task per stream; this service runs no attempts, so every task stays queued and its stream open
        task_ids = [
            c.post(
                "/v1/tasks",
                json={"url": f"https://www.tiktok.com/@x/video/{i}{uuid4().int % 10**9}", "output_type": "subtitles"},
            ).json()["task_id"]
            for i in range(21)
        ]
        opened = []
        for task_id in task_ids[:20]:
            events = streams.enter_context(c.stream("GET", f"/v1/tasks/{task_id}/events"))
            assert events.status_code == 200
            messages = read_sse(events)  # kept: dropping a half-read iterator would close the stream
            assert next(messages).event == "status"
            opened.append((events, messages))
        refused = c.get(f"/v1/tasks/{task_ids[20]}/events")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "too_many_streams"
        assert refused.json()["error"]["details"] == {"limit": 20}
        assert int(refused.headers["Retry-After"]) > 0
        other_task = other.post(
            "/v1/tasks", json={"url": "https://www.tiktok.com/@x/video/7", "output_type": "subtitles"}
        ).json()["task_id"]
        with other.stream("GET", f"/v1/tasks/{other_task}/events") as own:
            assert own.status_code == 200, "another user's streams are counted apart"
        opened[0][0].close()
        deadline = time.monotonic() + 10
        while True:
            with c.stream("GET", f"/v1/tasks/{task_ids[20]}/events") as again:
                if again.status_code == 200:
                    break
            assert again.status_code == 429 and time.monotonic() < deadline, "a closed stream must free its place"
            time.sleep(0.2)


def test_former_500s_answer_their_documented_4xx(hostile: RunningService, extracted: tuple[str, str]) -> None:
    key, task_id = extracted
    anonymous = httpx.get(
        f"{hostile.url}/v1/tasks/{task_id}/events",
        params={"access_token": "ü.ñ.é"},
        headers=from_address("198.51.100.1"),
        timeout=10,
    )
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"
    with hostile.client(key) as c:
        huge = c.get(f"/v1/tasks/{task_id}/video", headers={"Range": "bytes=" + "9" * 5000 + "-"})
        assert huge.status_code == 416
        assert huge.json()["error"]["code"] == "range_not_satisfiable"
        assert huge.headers["Content-Range"].startswith("bytes */")
        suffix = c.get(f"/v1/tasks/{task_id}/video", headers={"Range": "bytes=-" + "9" * 5000})
        assert suffix.status_code == 206, "a suffix longer than the video is the whole video"
        assert c.get(f"/v1/tasks/{task_id}/video", headers={"Range": "bytes=" + "0" * 5000 + "1-1"}).status_code == 206


def test_a_user_id_ending_in_a_newline_is_refused(hostile: RunningService) -> None:
    r = httpx.post(
        hostile.url + "/v1/admin/users", json={"user_id": "alice\n", "credits": 1}, headers=hostile.admin, timeout=10
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_user_id"


def test_api_responses_name_no_blob_uri(hostile: RunningService, extracted: tuple[str, str]) -> None:
    key, task_id = extracted
    with hostile.client(key) as c:
        task = c.get(f"/v1/tasks/{task_id}")
        history = c.get(f"/v1/tasks/{task_id}/history")
        listed = c.get("/v1/tasks")
    for response in (task, history, listed):
        assert response.status_code == 200
        assert "file://" not in response.text and "s3://" not in response.text and '"uri"' not in response.text
    result = task.json()["result"]
    assert set(result["video"]) == {"key", "size", "sha256", "content_type"}
    assert set(result["subtitles"][0]["blob"]) == {"key", "size", "sha256", "content_type"}


def test_metrics_need_the_admin_token(hostile: RunningService) -> None:
    assert httpx.get(hostile.url + "/metrics", timeout=10).status_code == 401
    assert httpx.get(hostile.url + "/metrics", headers=hostile.admin, timeout=10).status_code == 200


def test_every_response_carries_the_security_headers(hostile: RunningService, extracted: tuple[str, str]) -> None:
    key, task_id = extracted
    auth = {"Authorization": f"Bearer {key}"}
    responses = {
        "healthz": httpx.get(hostile.url + "/healthz", timeout=10),
        "page": httpx.get(hostile.url + "/", timeout=10),
        "docs": httpx.get(hostile.url + "/docs", timeout=10),
        "task": httpx.get(f"{hostile.url}/v1/tasks/{task_id}", headers=auth, timeout=10),
        "video": httpx.get(f"{hostile.url}/v1/tasks/{task_id}/video", headers=auth, timeout=10),
        "404": httpx.get(f"{hostile.url}/v1/tasks/{uuid4()}", headers=auth, timeout=10),
        "401": httpx.get(f"{hostile.url}/v1/tasks", timeout=10),
        "413": httpx.post(f"{hostile.url}/v1/tasks", content=b"x" * 100_000, headers=auth, timeout=10),
    }
    for name, r in responses.items():
        assert r.headers.get("x-content-type-options") == "nosniff", name
        assert r.headers.get("referrer-policy") == "no-referrer", name
        assert r.headers.get("x-frame-options") == "DENY", name
        assert "frame-ancestors 'none'" in r.headers.get("content-security-policy", ""), name
        assert "server" not in r.headers, name
    assert responses["task"].headers["cache-control"] == "no-store"
    assert responses["task"].headers["content-security-policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert "script-src" not in responses["page"].headers["content-security-policy"]  # the page: 'self' only
    assert responses["page"].headers["content-security-policy"].startswith("default-src 'self'")


def test_failed_authentications_are_capped_per_client_address(hostile: RunningService) -> None:
    _, key = hostile.new_user(1)
    attacker = "203.0.113.7"
    guesses = [
        httpx.get(
            hostile.url + "/v1/account", timeout=10, headers=from_address(attacker, Authorization=f"Bearer mt_guess{i}")
        )
        for i in range(AUTH_FAILURES)
    ]
    assert [g.status_code for g in guesses] == [401] * AUTH_FAILURES
    refused = httpx.get(
        hostile.url + "/v1/account", headers=from_address(attacker, Authorization="Bearer mt_x"), timeout=10
    )
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "too_many_failed_authentications"
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    admin_guess = httpx.post(
        hostile.url + "/v1/admin/users",
        json={"user_id": "x"},
        timeout=10,
        headers=from_address(attacker, Authorization="Bearer not-the-admin-token"),
    )
    assert admin_guess.status_code == 429, "admin token guesses count too"
    # the same address with a valid key seen before still works; another address is not affected
    assert (
        httpx.get(
            hostile.url + "/v1/account", headers=from_address("203.0.113.8", Authorization=f"Bearer {key}"), timeout=10
        ).status_code
        == 200
    )
    assert (
        httpx.get(
            hostile.url + "/v1/account", headers=from_address(attacker, Authorization=f"Bearer {key}"), timeout=10
        ).status_code
        == 200
    )
    assert (
        httpx.get(
            hostile.url + "/v1/account", headers=from_address("203.0.113.9", Authorization="Bearer mt_y"), timeout=10
        ).status_code
        == 401
    )
