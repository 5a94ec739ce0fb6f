"""POST /v1/tasks served below FastAPI's dependency solver answers exactly as FastAPI's route does.

The fast path takes only `Content-Type: application/json`, bare or with `; charset=utf-8`; the same
request as `application/vnd.mediatasks+json` goes through FastAPI's route (FastAPI reads all three as
JSON). So every case is sent each way, to the same server, and the answers compared: status, body,
header names and values (the task id, the Location naming it and the remaining rate count aside).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import RunningService

FAST = ("application/json", "application/json; charset=UTF-8")
FASTAPI = "application/vnd.mediatasks+json"
TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
VARYING = {"date", "ratelimit"}  # the remaining count of the rate limit goes down by one per request


def answer(r: httpx.Response) -> dict[str, Any]:
    headers = {k: UUID.sub("<id>", v) for k, v in r.headers.items() if k not in VARYING}
    rate = r.headers.get("ratelimit")
    return {
        "status": r.status_code,
        "body": UUID.sub("<id>", r.text),
        "headers": headers,
        "ratelimit": re.sub(r"r=\d+", "r=<n>", rate) if rate else None,
    }


def each_way(service: RunningService, api_key: str | None, body: bytes, **headers: str) -> list[dict[str, Any]]:
    answers = []
    for content_type in (*FAST, FASTAPI):
        sent = {"Content-Type": content_type, **headers}
        if api_key is not None:
            sent["Authorization"] = f"Bearer {api_key}"
        with httpx.Client(base_url=service.url, timeout=30) as client:
            answers.append(answer(client.post("/v1/tasks", content=body, headers=sent)))
    return answers


def json_body(**fields: Any) -> bytes:
    return httpx.Request("POST", "http://x", json=fields).content


@pytest.mark.parametrize(
    "body",
    [
        json_body(url=TIKTOK, output_type="subtitles"),
        json_body(url=TIKTOK, output_type="video", languages=["en"], max_height=720, mute=True),
        json_body(url=TIKTOK, output_type="subtitles", unknown=1),  # extra field: 422
        json_body(url=TIKTOK, output_type="karaoke"),  # 422
        json_body(url="https://example.com/not-a-video", output_type="subtitles"),  # unsupported link
        json_body(url=TIKTOK),  # missing field
        b"[1, 2]",
        b'{"url": ',  # invalid JSON
        b"",
        '{"url": "https://www.tiktok.com/@a/video/1\u00e9", "output_type": "subtitles"}'.encode(),
    ],
    ids=["ok", "options", "extra", "type", "unsupported", "missing", "list", "invalid-json", "empty", "non-ascii"],
)
def test_a_submission_is_answered_as_fastapi_answers_it(service: RunningService, body: bytes) -> None:
    _, api_key = service.new_user(100)
    fast, fast_with_charset, fastapi = each_way(service, api_key, body)
    assert fast == fast_with_charset == fastapi


@pytest.mark.parametrize(
    "key",
    [b"", b"a b", b"x" * 256, "é".encode(), b"k" + uuid.uuid4().hex.encode(), b"k" * 254, b"k,second"],
    ids=["empty", "space", "too-long", "non-ascii", "ok", "longest", "two"],
)
def test_the_idempotency_key_is_checked_as_fastapi_checks_it(service: RunningService, key: bytes) -> None:
    _, api_key = service.new_user(100)
    body = json_body(url=TIKTOK, output_type="subtitles")
    answers = []
    for way, content_type in enumerate((*FAST, FASTAPI)):  # a valid key of each way's own: a new task each
        sent = key.split(b",")[0] + str(way).encode() if key.startswith(b"k") else key
        headers = [
            (b"Content-Type", content_type.encode()),
            (b"Authorization", f"Bearer {api_key}".encode()),
            (b"Idempotency-Key", sent),
        ]
        if b"," in key:  # a second Idempotency-Key header: FastAPI reads the first
            headers.append((b"Idempotency-Key", key.split(b",")[1]))
        with httpx.Client(base_url=service.url, timeout=30) as client:
            answers.append(answer(client.post("/v1/tasks", content=body, headers=headers)))
    assert answers[0]["status"] == (202 if key.startswith(b"k") else 422)
    assert answers[0] == answers[1] == answers[2]


def test_replays_conflicts_and_refusals_are_answered_alike(service: RunningService) -> None:
    body = json_body(url=TIKTOK, output_type="subtitles")
    other = json_body(url=TIKTOK, output_type="video")
    results: dict[str, list[dict[str, Any]]] = {"first": [], "replay": [], "conflict": [], "no credits": []}
    for content_type in (*FAST, FASTAPI):
        _, api_key = service.new_user(1)
        with httpx.Client(base_url=service.url, timeout=30) as client:
            headers = {"Content-Type": content_type, "Authorization": f"Bearer {api_key}", "Idempotency-Key": "once"}
            results["first"].append(answer(client.post("/v1/tasks", content=body, headers=headers)))
            results["replay"].append(answer(client.post("/v1/tasks", content=body, headers=headers)))
            results["conflict"].append(answer(client.post("/v1/tasks", content=other, headers=headers)))
            del headers["Idempotency-Key"]
            results["no credits"].append(answer(client.post("/v1/tasks", content=body, headers=headers)))
    assert [r["status"] for r in results["first"]] == [202] * 3
    assert [r["status"] for r in results["replay"]] == [200] * 3
    assert results["replay"][0]["headers"]["idempotent-replayed"] == "true"
    assert [r["status"] for r in results["conflict"]] == [409] * 3
    assert [r["status"] for r in results["no credits"]] == [402] * 3
    for case, (fast, fast_with_charset, fastapi) in results.items():
        assert fast == fast_with_charset == fastapi, case


@pytest.mark.parametrize("api_key", [None, "mt_not-a-key"], ids=["none", "invalid"])
def test_an_unauthenticated_submission_is_refused_alike(service: RunningService, api_key: str | None) -> None:
    fast, fast_with_charset, fastapi = each_way(service, api_key, json_body(url=TIKTOK, output_type="subtitles"))
    assert fast["status"] == 401
    assert fast == fast_with_charset == fastapi


def test_the_fast_path_keeps_the_routes_openapi_document(service: RunningService) -> None:
    document = httpx.get(service.url + "/openapi.json").json()
    submit = document["paths"]["/v1/tasks"]["post"]
    assert submit["operationId"] == "submit_task_v1_tasks_post"
    assert {p["name"] for p in submit["parameters"]} == {"Idempotency-Key"}
    assert set(submit["responses"]) == {"200", "202", "401", "402", "409", "413", "422", "429", "503"}
