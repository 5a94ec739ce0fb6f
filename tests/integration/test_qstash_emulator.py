"""Publish client → local QStash emulator → a loopback receiver that verifies every signature."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import qstash

from infrastructure.delivery.qstash_client import PublishRejected, PublishUnavailable, QStashPublishClient
from infrastructure.delivery.qstash_signature import (
    InMemorySeenTokenIds,
    InvalidSignature,
    QStashSignatureVerifier,
)
from tests.support.qstash_emulator import QStashEmulator

PUBLIC_ORIGIN = "https://mediatasks.example"
PUBLIC_URL = f"{PUBLIC_ORIGIN}/v1/deliveries/qstash"


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    refusal: str | None
    official_sdk_accepts: bool
    status: int


class LoopbackReceiver:
    """A stand-in for the delivery endpoint: verifies like the service, then answers from a script."""

    def __init__(self, verifier: QStashSignatureVerifier, sdk_receiver: qstash.Receiver) -> None:
        self.verifier = verifier
        self.sdk_receiver = sdk_receiver
        self.script: list[Answer] = []
        self.requests: list[Received] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def answer(self, *answers: Answer) -> None:
        with self._lock:
            self.script.extend(answers)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> Answer:
        refusal = None
        try:
            self.verifier.verify(headers.get("upstash-signature"), body)
        except InvalidSignature as error:
            refusal = error.reason
        official_sdk_accepts = True
        try:
            self.sdk_receiver.verify(signature=headers.get("upstash-signature", ""), body=body.decode(), url=PUBLIC_URL)
        except qstash.errors.SignatureError:
            official_sdk_accepts = False
        with self._lock:
            answer = Answer(401) if refusal else (self.script.pop(0) if self.script else Answer())
            self.requests.append(Received(path, headers, body, refusal, official_sdk_accepts, answer.status))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(answer.delay_s)
        with self._lock:
            self.in_flight -= 1
        return answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class DeliveryHandler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                answer = receiver.handle(self.path, headers, body)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return DeliveryHandler


@pytest.fixture
def emulator() -> Iterator[QStashEmulator]:
    with QStashEmulator(retry_delay_scale=0.01, seed=7) as running:
        yield running


@pytest.fixture
def receiver(emulator: QStashEmulator) -> Iterator[LoopbackReceiver]:
    verifier = QStashSignatureVerifier(
        emulator.current_signing_key, emulator.next_signing_key, PUBLIC_URL, seen_token_ids=InMemorySeenTokenIds()
    )
    sdk_receiver = qstash.Receiver(
        current_signing_key=emulator.current_signing_key, next_signing_key=emulator.next_signing_key
    )
    running = LoopbackReceiver(verifier, sdk_receiver)
    running.start()
    emulator.route(PUBLIC_ORIGIN, running.url)
    yield running
    running.stop()


@pytest.fixture
def publisher(emulator: QStashEmulator) -> Iterator[QStashPublishClient]:
    with QStashPublishClient(emulator.url, emulator.token, PUBLIC_URL, retries=3) as client:
        yield client


def test_published_attempt_is_delivered_once_signed_for_the_public_url(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    message_id = publisher.publish("task-1", 1)
    emulator.wait_until_idle(5)

    [publish] = emulator.publishes
    assert publish.status_code == 201
    assert publish.destination == PUBLIC_URL
    assert publish.headers["upstash-deduplication-id"] == "task-1-1"
    assert publish.headers["upstash-retries"] == "3"
    assert publish.headers["authorization"] == f"Bearer {emulator.token}"
    [request] = receiver.requests
    assert request.refusal is None
    assert request.official_sdk_accepts
    assert request.path == "/v1/deliveries/qstash"
    assert json.loads(request.body) == {"task_id": "task-1", "attempt": 1}
    assert request.headers["upstash-message-id"] == message_id
    assert request.headers["upstash-retried"] == "0"
    assert request.headers["user-agent"] == "Upstash-QStash"
    assert request.headers["content-type"] == "application/json"
    assert emulator.message_state(message_id) == "delivered"


def test_same_deduplication_id_is_delivered_once(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    first = publisher.publish("task-2", 1)
    again = publisher.publish("task-2", 1)
    next_attempt = publisher.publish("task-2", 2)
    emulator.wait_until_idle(5)

    assert again == first
    assert next_attempt != first
    assert [(p.status_code, p.deduplicated) for p in emulator.publishes] == [(201, False), (202, True), (201, False)]
    bodies = sorted(json.loads(request.body)["attempt"] for request in receiver.requests)
    assert bodies == [1, 2]


def test_deduplication_window_ends(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.deduplication_window_s = 0.2
    first = publisher.publish("task-3", 1)
    time.sleep(0.3)

    assert publisher.publish("task-3", 1) != first
    emulator.wait_until_idle(5)
    assert len(receiver.requests) == 2


def test_non_2xx_is_retried_after_retry_after_with_upstash_retried_counting(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    receiver.answer(Answer(503, {"Retry-After": "20"}), Answer(409, {"Retry-After": "10"}), Answer(200))

    message_id = publisher.publish("task-4", 1)
    emulator.wait_until_idle(5)

    deliveries = emulator.deliveries_for(message_id)
    assert [(d.retried, d.status_code, d.kind) for d in deliveries] == [
        (0, 503, "delivery"),
        (1, 409, "retry"),
        (2, 200, "retry"),
    ]
    assert [r.headers["upstash-retried"] for r in receiver.requests] == ["0", "1", "2"]
    assert all(r.refusal is None for r in receiver.requests)
    assert deliveries[1].started_at - deliveries[0].finished_at >= 20 * 0.01 * 0.9
    assert deliveries[2].started_at - deliveries[1].finished_at >= 10 * 0.01 * 0.9
    assert emulator.message_state(message_id) == "delivered"


def test_message_fails_when_retries_run_out_or_the_answer_is_non_retryable(
    emulator: QStashEmulator, receiver: LoopbackReceiver
) -> None:
    with QStashPublishClient(emulator.url, emulator.token, PUBLIC_URL, retries=2) as publisher:
        receiver.answer(*[Answer(503, {"Retry-After": "0"})] * 3, Answer(400, {"Upstash-NonRetryable-Error": "true"}))
        exhausted = publisher.publish("task-5", 1)
        emulator.wait_until_idle(5)
        refused = publisher.publish("task-5", 2)
        emulator.wait_until_idle(5)

    assert [d.retried for d in emulator.deliveries_for(exhausted)] == [0, 1, 2]
    assert emulator.message_state(exhausted) == "failed"
    assert [d.status_code for d in emulator.deliveries_for(refused)] == [400]
    assert emulator.message_state(refused) == "failed"


def test_duplicate_delivery_after_success_when_configured(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.duplicate_ratio = 1.0

    message_id = publisher.publish("task-6", 1)
    emulator.wait_until_idle(5)

    deliveries = emulator.deliveries_for(message_id)
    assert [d.kind for d in deliveries] == ["delivery", "duplicate"]
    assert [r.headers["upstash-message-id"] for r in receiver.requests] == [message_id, message_id]
    assert receiver.requests[0].body == receiver.requests[1].body
    assert receiver.requests[0].headers["upstash-signature"] != receiver.requests[1].headers["upstash-signature"]
    assert all(r.refusal is None for r in receiver.requests)


def test_concurrent_duplicates_arrive_at_the_same_time(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.concurrent_duplicate_ratio = 1.0
    receiver.answer(Answer(200, delay_s=0.3), Answer(200, delay_s=0.3))

    message_id = publisher.publish("task-7", 1)
    emulator.wait_until_idle(5)

    first, second = sorted(emulator.deliveries_for(message_id), key=lambda d: d.kind)
    assert (first.kind, second.kind) == ("concurrent_duplicate", "delivery")
    assert first.started_at < second.finished_at and second.started_at < first.finished_at
    assert receiver.most_in_flight == 2
    assert all(r.refusal is None for r in receiver.requests)
    assert emulator.message_state(message_id) == "delivered"


def test_slow_answer_times_out_and_is_redelivered_while_the_first_still_runs(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.delivery_timeout_s = 0.2
    receiver.answer(Answer(200, delay_s=0.8), Answer(200))

    message_id = publisher.publish("task-8", 1)
    emulator.wait_until_idle(5)

    timed_out, redelivered = emulator.deliveries_for(message_id)
    assert timed_out.status_code is None and timed_out.error is not None and timed_out.error.startswith("timeout")
    assert (redelivered.kind, redelivered.retried, redelivered.status_code) == ("retry", 1, 200)
    assert receiver.most_in_flight == 2
    assert emulator.message_state(message_id) == "delivered"


def test_key_rotation_next_key_accepted_then_unknown_key_refused(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.rotate_signing_keys()
    rotated_once = publisher.publish("task-9", 1)
    emulator.wait_until_idle(5)
    emulator.rotate_signing_keys()
    emulator.max_retries = 1
    rotated_twice = publisher.publish("task-9", 2)
    emulator.wait_until_idle(5)

    assert [d.status_code for d in emulator.deliveries_for(rotated_once)] == [200]
    assert [d.status_code for d in emulator.deliveries_for(rotated_twice)] == [401, 401]
    assert emulator.message_state(rotated_twice) == "failed"
    refusals = [r.refusal for r in receiver.requests if r.refusal]
    assert len(refusals) == 2 and all("neither" in reason for reason in refusals)


def test_publish_errors_are_classified(
    emulator: QStashEmulator, receiver: LoopbackReceiver, publisher: QStashPublishClient
) -> None:
    emulator.fail_publishes(503, retry_after="2")
    with pytest.raises(PublishUnavailable) as unavailable:
        publisher.publish("task-10", 1)
    assert (unavailable.value.status_code, unavailable.value.retry_after) == (503, 2.0)

    emulator.fail_publishes(429)
    with pytest.raises(PublishUnavailable):
        publisher.publish("task-10", 1)

    emulator.fail_publishes(400)
    with pytest.raises(PublishRejected) as rejected:
        publisher.publish("task-10", 1)
    assert rejected.value.status_code == 400

    with QStashPublishClient(emulator.url, "wrong-token", PUBLIC_URL, retries=3) as unauthorized:
        with pytest.raises(PublishRejected) as refused:
            unauthorized.publish("task-10", 1)
    assert refused.value.status_code == 401

    assert publisher.publish("task-10", 1).startswith("msg_")


def test_unreachable_qstash_is_transient() -> None:
    with httpx.Client(timeout=1) as client:
        with QStashPublishClient("http://127.0.0.1:9", "token", PUBLIC_URL, retries=1, client=client) as publisher:
            with pytest.raises(PublishUnavailable) as unavailable:
                publisher.publish("task-11", 1)
    assert unavailable.value.status_code is None


def test_emulator_calls_loopback_destinations_only(emulator: QStashEmulator) -> None:
    with QStashPublishClient(emulator.url, emulator.token, "https://elsewhere.example/hook", retries=0) as publisher:
        with pytest.raises(PublishRejected):
            publisher.publish("task-12", 1)
    assert emulator.deliveries == []


def test_several_loopback_targets_are_called_round_robin_skipping_refused_ones(
    emulator: QStashEmulator, receiver: LoopbackReceiver
) -> None:
    emulator.route("https://balanced.example", "http://127.0.0.1:9", receiver.url)  # port 9: nobody listens
    with QStashPublishClient(emulator.url, emulator.token, "https://balanced.example/hook", retries=0) as client:
        for n in range(4):
            client.publish(f"task-rr-{n}", 1)
        emulator.wait_until_idle(5)

    assert [request.path for request in receiver.requests] == ["/hook"] * 4
    assert all(d.error is None and d.sent_to == receiver.url + "/hook" for d in emulator.deliveries)
