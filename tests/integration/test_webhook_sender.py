"""The webhook sender on real PostgreSQL against loopback receivers: SSRF at delivery, 410, schedule's end."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresDatastore
from standardwebhooks.webhooks import Webhook

from application.mediatasks import MediaTasks
from infrastructure.postgres.webhook_store import (
    FAILED,
    PENDING,
    SUCCEEDED,
    Attempt,
    NewDelivery,
    PostgresWebhookStore,
)
from infrastructure.safe_http import SafeFetcher, UrlPolicy
from infrastructure.webhooks.sender import WebhookSender
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()  # replaced by the endpoint's own once registered


@pytest.fixture
def store(app: MediaTasks) -> PostgresWebhookStore:
    datastore: PostgresDatastore = app.recorder.datastore  # type: ignore[attr-defined]
    return PostgresWebhookStore(datastore)


@pytest.fixture
def names() -> dict[str, str]:
    return {}


@pytest.fixture
def fetcher(names: dict[str, str]) -> Iterator[SafeFetcher]:
    policy = UrlPolicy(allow_cidrs=("127.0.0.1/32",), resolver=lambda host, port: [names[host]])
    with SafeFetcher(policy, connect_timeout=2, read_timeout=2, deadline_seconds=3, max_redirects=0) as f:
        yield f


def one_delivery(store: PostgresWebhookStore, url: str, position: int = 1) -> tuple:
    endpoint, _ = store.add_endpoint("alice", url, ["task.failed"], "")
    body = json.dumps({"type": "task.failed", "timestamp": "2026-12-01T00:00:00Z", "data": {"n": position}})
    store.fan_out(position, [NewDelivery(endpoint.id, "task.failed", body)], Tracking("MediaTasks", position))
    return endpoint, store.claim_next(endpoint.id, timedelta(seconds=10))


def test_a_dns_change_to_a_private_address_is_refused_at_delivery(
    store: PostgresWebhookStore, fetcher: SafeFetcher, names: dict[str, str]
) -> None:
    receiver = WebhookReceiver(SECRET).start()
    try:
        port = receiver.server_address[1]
        names["hooks.example"] = "127.0.0.1"  # allowed by the tests' CIDR list, like at registration
        endpoint, delivery = one_delivery(store, f"http://hooks.example:{port}/hook")
        receiver.webhook = Webhook(endpoint.signing_secrets(datetime.now(timezone.utc))[0])
        sender = WebhookSender(store, fetcher, schedule=(0, 0, 0), timeout_seconds=3)
        assert sender.deliver(endpoint, delivery) is True
        assert len(receiver.processed) == 1

        names["hooks.example"] = "10.20.30.40"  # the name now points inside
        _, second = one_delivery(store, endpoint.url, position=2)
        connections_before = fetcher.transport.connections_attempted
        assert sender.deliver(endpoint, second) is False
        assert fetcher.transport.connections_attempted == connections_before  # refused before connecting
        assert len(receiver.arrivals) == 1
        recorded = store.delivery(second.endpoint_id, second.id)
        assert recorded is not None and recorded.status == PENDING
        assert recorded.history[-1].status_code is None and recorded.history[-1].error.startswith("url_not_allowed")
    finally:
        receiver.stop()


def test_410_disables_the_endpoint_and_the_schedule_ends_in_failed(
    store: PostgresWebhookStore, fetcher: SafeFetcher, names: dict[str, str]
) -> None:
    gone = WebhookReceiver(SECRET, status=410).start()
    broken = WebhookReceiver(SECRET, status=500).start()
    try:
        names["gone.example"] = names["broken.example"] = "127.0.0.1"
        sender = WebhookSender(store, fetcher, schedule=(0, 0), timeout_seconds=3)
        endpoint, delivery = one_delivery(store, f"http://gone.example:{gone.server_address[1]}/hook")
        gone.webhook = Webhook(endpoint.secrets[0]["secret"])
        assert sender.deliver(endpoint, delivery) is False
        after = store.endpoint(endpoint.id)
        assert after is not None and not after.enabled and "410" in (after.disabled_reason or "")
        assert store.delivery(endpoint.id, delivery.id).status == FAILED

        endpoint, delivery = one_delivery(store, f"http://broken.example:{broken.server_address[1]}/hook", 7)
        broken.webhook = Webhook(endpoint.secrets[0]["secret"])
        assert sender.deliver(endpoint, delivery) is False
        again = store.claim_next(endpoint.id, timedelta(seconds=10))
        assert again is not None and again.attempts == 1
        assert sender.deliver(endpoint, again) is False
        final = store.delivery(endpoint.id, delivery.id)
        assert final.status == FAILED and [a.status_code for a in final.history] == [500, 500]
        assert store.endpoint(endpoint.id).failing_since is not None
        assert store.redeliver(endpoint.id, delivery.id).status == PENDING
        broken.status = 200
        third = store.claim_next(endpoint.id, timedelta(seconds=10))
        assert sender.deliver(endpoint, third) is True
        done = store.delivery(endpoint.id, delivery.id)
        assert done.status == SUCCEEDED and done.attempts == 3
        assert store.endpoint(endpoint.id).failing_since is None
    finally:
        gone.stop()
        broken.stop()


def test_a_delivery_is_read_with_its_attempts_from_one_snapshot(store: PostgresWebhookStore) -> None:
    """A reader never sees an attempt's answer beside the status from before it (the page showed both)."""
    endpoint, _ = store.add_endpoint("alice", "http://127.0.0.1:9/hook", ["task.failed"], "")
    deliveries = []
    for position in range(1, 41):
        body = json.dumps({"type": "task.failed", "timestamp": "2026-12-01T00:00:00Z", "data": {"n": position}})
        store.fan_out(position, [NewDelivery(endpoint.id, "task.failed", body)], Tracking("MediaTasks", position))
        deliveries.append(store.claim_next(endpoint.id, timedelta(seconds=10)))
    done = threading.Event()
    mixed: list[tuple[str, str, list]] = []

    def read() -> None:
        while not done.is_set():
            for d in store.deliveries_of(endpoint.id, limit=50):
                answered = [a.status_code for a in d.history]
                if (d.status == SUCCEEDED) != (200 in answered) or d.attempts != len(answered):
                    mixed.append((d.id, d.status, answered))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for d in deliveries:
            for number, code in ((1, 500), (2, 200)):
                attempt = Attempt(number, datetime.now(timezone.utc), code, 1.0, None)
                store.record_attempt(d, attempt, status=SUCCEEDED if code == 200 else PENDING, next_attempt_at=None)
    finally:
        done.set()
        reader.join()
    assert not mixed, mixed[:3]
