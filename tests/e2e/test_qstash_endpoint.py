"""`POST /v1/deliveries/qstash` on a real `mediatasks worker` process: signatures and answers.

Every refused request must leave the event store (and the table of seen token ids) as it was.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import httpx
import psycopg
import pytest

from application.mediatasks import MediaTasks
from infrastructure.settings import Settings
from tests.e2e.conftest import platform_settings, start_service
from tests.support.fake_platform import FakePlatform
from tests.support.postgres import database_url, drop_schema
from tests.support.qstash_emulator import delivery_claims, new_signing_key, sign_claims
from tests.support.service_process import ServiceProcess

PUBLIC_URL = "https://mediatasks.example"
ENDPOINT = PUBLIC_URL + "/v1/deliveries/qstash"
CURRENT_KEY, NEXT_KEY = new_signing_key(), new_signing_key()
RETRIES = 2
LEASE_SECONDS = 30


@dataclass
class Worker:
    process: ServiceProcess
    app: MediaTasks
    pg: dict[str, str]
    schema: str

    def deliver(
        self, body: bytes, signature: str | None, *, retried: int = 0, message_id: str = "msg_test"
    ) -> httpx.Response:
        headers = {
            "Content-Type": "application/json",
            "Upstash-Retried": str(retried),
            "Upstash-Message-Id": message_id,
        }
        if signature is not None:
            headers["Upstash-Signature"] = signature
        return httpx.post(self.process.url + "/v1/deliveries/qstash", content=body, headers=headers, timeout=30)

    def seen_token_ids(self) -> int:
        with psycopg.connect(database_url(self.pg)) as conn:
            return conn.execute(f'SELECT count(*) FROM "{self.schema}".qstash_seen_token_ids').fetchone()[0]

    def written(self) -> tuple[int, int]:
        """The head of the event log and the number of token ids seen: what a refusal must not change."""
        return self.app.recorder.max_notification_id() or 0, self.seen_token_ids()


@pytest.fixture(scope="module")
def worker(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[Worker]:
    settings = platform_settings(
        platform,
        dispatch="qstash",
        public_url=PUBLIC_URL,
        qstash_current_signing_key=CURRENT_KEY,
        qstash_next_signing_key=NEXT_KEY,
        qstash_retries=str(RETRIES),
        lease_seconds=str(LEASE_SECONDS),
        retry_base_seconds="2",
        postgres_pool_size="2",
        postgres_max_overflow="2",
    )
    process, schema = start_service(
        pg_database_one, Path(tmp_path_factory.mktemp("worker")), command="worker", **settings
    )
    env = Settings(
        postgres_schema=schema, lease_seconds=LEASE_SECONDS, postgres_pool_size=1, postgres_max_overflow=1
    ).event_store_env(pg_database_one)
    app = MediaTasks(env=env)
    try:
        yield Worker(process, app, pg_database_one, schema)
    finally:
        app.close()
        process.stop()
        drop_schema(pg_database_one, schema)


def new_task(worker: Worker, url: str, output_type: str = "subtitles") -> UUID:
    user_id = f"u{time.monotonic_ns()}"
    worker.app.create_user(user_id, 10)
    return worker.app.submit(user_id, url, output_type, ["en"]).task_id


def message(task_id: UUID, attempt: int = 1) -> bytes:
    return json.dumps({"task_id": str(task_id), "attempt": attempt}).encode()


def signed(body: bytes, key: str = CURRENT_KEY, url: str = ENDPOINT, **claims: object) -> str:
    return sign_claims({**delivery_claims(url, body), **claims}, key)


def history(worker: Worker, task_id: UUID) -> list[str]:
    return [entry.type for entry in worker.app.task_history(task_id)]


def refusals(body: bytes) -> dict[str, tuple[bytes, str | None]]:
    """Each way a delivery's signature can be wrong: the body sent and the Upstash-Signature header."""
    now = int(time.time())
    return {
        "missing header": (body, None),
        "empty header": (body, ""),
        "wrong key": (body, signed(body, key=new_signing_key())),
        "tampered body": (body.replace(b'"attempt": 1', b'"attempt": 2'), signed(body)),
        "wrong sub": (body, signed(body, url=PUBLIC_URL + "/v1/deliveries/other")),
        "request URL as sub": (body, signed(body, url="http://127.0.0.1/v1/deliveries/qstash")),
        "wrong issuer": (body, signed(body, iss="Someone")),
        "expired": (body, signed(body, iat=now - 400, nbf=now - 400, exp=now - 60)),
        "not yet valid": (body, signed(body, nbf=now + 60, iat=now + 60, exp=now + 360)),
        "alg none": (body, sign_claims(delivery_claims(ENDPOINT, body), "", algorithm="none")),
    }


@pytest.mark.parametrize("case", list(refusals(b"{}")))
def test_a_bad_signature_is_refused_with_401_and_writes_nothing(
    worker: Worker, platform: FakePlatform, case: str
) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    body, signature = refusals(message(task_id))[case]
    before = worker.written()
    answer = worker.deliver(body, signature)
    assert answer.status_code == 401, (case, answer.text)
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert worker.written() == before
    assert history(worker, task_id) == ["Started"]


def test_the_next_signing_key_is_accepted_and_the_attempt_records_the_delivery(
    worker: Worker, platform: FakePlatform
) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    answer = worker.deliver(message(task_id), signed(message(task_id), key=NEXT_KEY), message_id="msg_next")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"outcome": "extracted", "attempt": 1}
    downloading = worker.app.task_history(task_id)[1]
    assert downloading.type == "Downloading"
    assert downloading.data["delivery"] == {
        "via": "qstash",
        "message_id": "msg_next",
        "retried": 0,
        "published_attempt": 1,
    }


def test_an_unpadded_body_hash_is_accepted(worker: Worker, platform: FakePlatform) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    body = message(task_id)
    claims = delivery_claims(ENDPOINT, body, pad_body_hash=False)
    assert worker.deliver(body, sign_claims(claims, CURRENT_KEY)).status_code == 200


def test_a_replayed_token_is_refused_and_writes_nothing(worker: Worker, platform: FakePlatform) -> None:
    task_id = new_task(worker, platform.media_url("no-subtitles"))
    body = message(task_id)
    token = signed(body)
    first = worker.deliver(body, token)
    assert (first.status_code, first.json()["outcome"]) == (200, "failed")
    before, events = worker.written(), history(worker, task_id)
    replay = worker.deliver(body, token)
    assert replay.status_code == 401
    assert worker.written() == before and history(worker, task_id) == events


def test_a_fresh_token_for_a_handled_message_answers_200_without_writing(
    worker: Worker, platform: FakePlatform
) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    assert worker.deliver(message(task_id), signed(message(task_id))).json()["outcome"] == "extracted"
    head = worker.app.recorder.max_notification_id()
    again = worker.deliver(message(task_id), signed(message(task_id)), message_id="msg_duplicate")
    assert (again.status_code, again.json()["outcome"]) == (200, "already_completed")
    assert worker.app.recorder.max_notification_id() == head


def test_another_attempt_holding_the_lease_gives_409_with_its_remaining_seconds(
    worker: Worker, platform: FakePlatform
) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    worker.app.begin_attempt(task_id, "another-worker")
    head = worker.app.recorder.max_notification_id()
    answer = worker.deliver(message(task_id), signed(message(task_id)))
    assert answer.status_code == 409, answer.text
    assert LEASE_SECONDS - 5 <= int(answer.headers["Retry-After"]) <= LEASE_SECONDS
    assert worker.app.recorder.max_notification_id() == head


def test_a_transient_fault_asks_for_a_retry_and_the_last_delivery_gives_up_with_a_refund(
    worker: Worker, platform: FakePlatform
) -> None:
    task_id = new_task(worker, platform.media_url("429", fails=10, retry_after=7))
    body = message(task_id)
    first = worker.deliver(body, signed(body), retried=0)
    assert first.status_code == 429, first.text
    assert first.headers["Retry-After"] == "7"
    last = worker.deliver(body, signed(body), retried=RETRIES)
    assert (last.status_code, last.json()) == (200, {"outcome": "failed", "attempt": 2})
    failed = worker.app.task_history(task_id)[-1]
    assert (failed.type, failed.data["code"], failed.data["terminal"]) == ("Failed", "retries_exhausted", True)
    assert failed.data["context"]["last_error"] == "rate_limited"
    assert worker.app.task_history(task_id)[-2].data["delivery"]["last_delivery"] is True


def test_a_malformed_message_is_refused_for_good(worker: Worker) -> None:
    body = b'{"task_id": "not-a-uuid", "attempt": 1}'
    head = worker.app.recorder.max_notification_id()
    answer = worker.deliver(body, signed(body))
    assert answer.status_code == 400
    assert answer.headers["Upstash-NonRetryable-Error"] == "true"
    assert worker.app.recorder.max_notification_id() == head


def test_a_signed_body_nested_5000_deep_is_a_malformed_message_not_a_500(worker: Worker) -> None:
    body = b"[" * 5000 + b"]" * 5000
    head = worker.app.recorder.max_notification_id()
    answer = worker.deliver(body, signed(body))
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == "malformed_message"
    assert answer.headers["Upstash-NonRetryable-Error"] == "true"
    assert worker.app.recorder.max_notification_id() == head


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_a_signed_token_whose_time_claim_is_a_numeric_string_is_refused_with_401(
    worker: Worker, platform: FakePlatform, claim: str
) -> None:
    task_id = new_task(worker, platform.media_url("ok"))
    body = message(task_id)
    claims = delivery_claims(ENDPOINT, body)
    before = worker.written()
    answer = worker.deliver(body, sign_claims({**claims, claim: str(claims[claim])}, CURRENT_KEY))
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "invalid_signature"
    assert worker.written() == before


def test_the_worker_serves_nothing_but_deliveries_and_probes(worker: Worker) -> None:
    assert httpx.get(worker.process.url + "/readyz").status_code == 200
    assert httpx.get(worker.process.url + "/v1/account").status_code == 404
    assert httpx.post(worker.process.url + "/v1/tasks", json={}).status_code == 404
