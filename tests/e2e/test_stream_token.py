"""Stream tokens: a browser's EventSource, <video> and download links authenticate with ?access_token=."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from uuid import uuid4

import httpx

from infrastructure.api.stream_tokens import STREAM_TOKEN_SECONDS, StreamTokens
from tests.e2e.conftest import ADMIN_TOKEN, RunningService, start_service
from tests.support.postgres import database_url, drop_schema
from tests.support.service_process import ServiceProcess
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


def opens(url: str, task_id: str, token: str) -> int:
    """The status of the task's event stream opened with this token alone."""
    with httpx.stream("GET", f"{url}/v1/tasks/{task_id}/events", params={"access_token": token}, timeout=30) as r:
        return r.status_code


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_token_forged_with_the_former_config_derived_key_is_refused(
    service: RunningService, pg_database_one: dict[str, str]
) -> None:
    user_id, key = service.new_user(5)
    with service.client(key) as c:
        task_id = c.post("/v1/tasks", json={"url": TIKTOK + "9", "output_type": "subtitles"}).json()["task_id"]
        token = c.post(f"/v1/tasks/{task_id}/stream-token").json()["access_token"]
    assert opens(service.url, task_id, token) == 200
    # the key the service used to derive from non-secret settings: database URL, admin token, schema
    material = "\n".join([database_url(pg_database_one), ADMIN_TOKEN, service.schema])
    former_key = hashlib.sha256(b"mediatasks stream token\n" + material.encode()).digest()
    payload = b64(f"{user_id}|{task_id}|{int(time.time()) + 600}".encode())
    kid = token.split(".")[0]
    forged = [
        f"{payload}.{b64(hmac.new(former_key, payload.encode(), hashlib.sha256).digest())}",
        f"{kid}.{payload}.{b64(hmac.new(former_key, f'{kid}.{payload}'.encode(), hashlib.sha256).digest())}",
    ]
    assert [opens(service.url, task_id, f) for f in forged] == [401, 401]


def test_tokens_outlive_an_admin_token_rotation_and_the_previous_secret_verifies_during_a_rotation(
    pg_database_one: dict[str, str], tmp_path: Path
) -> None:
    schema = f"e2e_{uuid4().hex[:10]}"
    started: list[ServiceProcess] = []

    def serve(*args: str, **settings: str) -> ServiceProcess:
        started.append(
            start_service(pg_database_one, tmp_path, *args, dispatch="none", postgres_schema=schema, **settings)[0]
        )
        return started[-1]

    def serve_api(**settings: str) -> ServiceProcess:
        """The API alone: tokens are issued and checked there, and the read model already shows the task."""
        return serve("--no-projections", **settings)

    def token_for(process: ServiceProcess, key: str, task_id: str) -> str:
        r = httpx.post(
            f"{process.url}/v1/tasks/{task_id}/stream-token", headers={"Authorization": f"Bearer {key}"}, timeout=30
        )
        assert r.status_code == 200, r.text
        return r.json()["access_token"]

    try:
        first = serve()  # no secret set: one is generated into the database and every process reads it
        r = httpx.post(
            first.url + "/v1/admin/users",
            json={"user_id": "rotor", "credits": 5},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        key = r.json()["api_key"]
        r = httpx.post(
            first.url + "/v1/tasks",
            json={"url": TIKTOK, "output_type": "subtitles"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        generated = token_for(first, key, task_id)
        first.stop()

        rotated_admin = serve_api(admin_token="a-new-admin-token")
        assert opens(rotated_admin.url, task_id, generated) == 200, "rotating the admin token voids no token"
        rotated_admin.stop()

        secret_one, secret_two = "one-" + uuid4().hex, "two-" + uuid4().hex
        with_one = serve_api(stream_token_secret=secret_one)
        assert opens(with_one.url, task_id, generated) == 401, "another secret: the generated one's tokens are void"
        signed_with_one = token_for(with_one, key, task_id)
        with_one.stop()

        rotating = serve_api(stream_token_secret=secret_two, stream_token_previous_secrets=f"unused,{secret_one}")
        assert opens(rotating.url, task_id, signed_with_one) == 200, "the previous secret verifies during a rotation"
        assert opens(rotating.url, task_id, token_for(rotating, key, task_id)) == 200
        rotating.stop()

        rotated = serve_api(stream_token_secret=secret_two)
        assert opens(rotated.url, task_id, signed_with_one) == 401, "once the previous secret is dropped"
        rotated.stop()
    finally:
        for process in started:
            process.stop()
        drop_schema(pg_database_one, schema)
