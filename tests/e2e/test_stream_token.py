"""Stream tokens: a browser's EventSource, <video> and download links authenticate with ?access_token=."""

from __future__ import annotations

import json
import time
from uuid import uuid4

from infrastructure.api.deps import STREAM_TOKEN_SECONDS, StreamTokens
from tests.e2e.conftest import RunningService
from tests.support.sse import read_sse

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


def test_a_stream_token_opens_its_own_task_only(service: RunningService) -> None:
    _, key = service.new_user(5)
    _, other_key = service.new_user(5)
    with service.client(key) as c, service.client(other_key) as other, service.client() as anonymous:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK, "output_type": "subtitles"}).json()["task_id"]
        second_id = c.post("/v1/tasks", json={"url": TIKTOK + "1", "output_type": "subtitles"}).json()["task_id"]
        before = time.time()
        r = c.post(f"/v1/tasks/{task_id}/stream-token")
        assert r.status_code == 200, r.text
        token = r.json()["access_token"]
        assert before + STREAM_TOKEN_SECONDS - 1 <= r.json()["expires_at"] <= time.time() + STREAM_TOKEN_SECONDS
        assert key not in token

        with anonymous.stream("GET", f"/v1/tasks/{task_id}/events", params={"access_token": token}) as events:
            assert events.status_code == 200
            first = next(m for m in read_sse(events) if m.event == "status")
        assert json.loads(first.data)["status"] == "queued"
        # the token gets past authentication on the outputs too (the task simply is not done yet)
        subtitles = anonymous.get(f"/v1/tasks/{task_id}/subtitles", params={"access_token": token})
        assert subtitles.status_code == 409 and subtitles.json()["error"]["code"] == "task_not_ready"
        assert anonymous.get(f"/v1/tasks/{task_id}/video", params={"access_token": token}).status_code == 409

        refused = [
            anonymous.get(f"/v1/tasks/{second_id}/events", params={"access_token": token}),  # another task
            anonymous.get(f"/v1/tasks/{task_id}/events", params={"access_token": token[:-2] + "xx"}),  # forged
            anonymous.get(f"/v1/tasks/{task_id}/events", params={"access_token": key}),  # an API key is no token
            anonymous.get(f"/v1/tasks/{task_id}", params={"access_token": token}),  # only streams and outputs
            anonymous.get(f"/v1/tasks/{task_id}/history", params={"access_token": token}),
        ]
        assert [r.status_code for r in refused] == [401] * 5
        assert refused[0].json()["error"]["code"] == "unauthorized"

        assert other.post(f"/v1/tasks/{task_id}/stream-token").status_code == 404
        assert anonymous.post(f"/v1/tasks/{task_id}/stream-token").status_code == 401
    assert token not in service.process.log()


def test_stream_tokens_expire_and_are_bound_to_user_and_task() -> None:
    tokens = StreamTokens("secret-a")
    task_id = uuid4()
    token, expires = tokens.issue("alice", task_id, now=1000.0)
    assert expires == 1000 + STREAM_TOKEN_SECONDS
    assert tokens.user_of(token, task_id, now=1000.0 + STREAM_TOKEN_SECONDS) == "alice"
    assert tokens.user_of(token, task_id, now=1001.0 + STREAM_TOKEN_SECONDS) is None
    assert tokens.user_of(token, uuid4(), now=1000.0) is None
    # every process with the same secret accepts the others' tokens; another secret does not
    assert StreamTokens("secret-a").user_of(token, task_id, now=1000.0) == "alice"
    assert StreamTokens("secret-b").user_of(token, task_id, now=1000.0) is None
    # during a rotation the previous secret still verifies, and new tokens are signed with the new one
    rotated = StreamTokens("secret-b", ["secret-a"])
    assert rotated.user_of(token, task_id, now=1000.0) == "alice"
    assert StreamTokens("secret-a").user_of(rotated.issue("bob", task_id, now=1000.0)[0], task_id, now=1000.0) is None
    assert tokens.user_of("not-a-token", task_id) is None
    assert tokens.user_of("ünïcode.tökén.sïg", task_id) is None
