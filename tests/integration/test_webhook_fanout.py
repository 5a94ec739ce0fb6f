"""The webhook fan-out on real PostgreSQL: events of users without endpoints cost no aggregate read
and no commit each; an endpoint registered before an event gets it, even one the follower has not seen."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from eventsourcing.postgres import PostgresDatastore

from application.mediatasks import MediaTasks
from infrastructure.postgres.webhook_store import PostgresWebhookStore
from infrastructure.webhooks.fanout import FOLLOWED_TOPICS, TRACK_EVERY_EVENTS, WebhookFanout


@pytest.fixture
def store(app: MediaTasks) -> PostgresWebhookStore:
    datastore: PostgresDatastore = app.recorder.datastore  # type: ignore[attr-defined]
    return PostgresWebhookStore(datastore)


class CountedReads:
    """The application's repository, counting the aggregates read through it."""

    def __init__(self, repository: Any) -> None:
        self.repository, self.reads = repository, 0

    def get(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        return self.repository.get(*args, **kwargs)


def follow(fanout: WebhookFanout, app: MediaTasks, after: int) -> int:
    """Hand the fan-out every followed event after `after`, as its subscription would; the last position."""
    for notification in app.recorder.select_notifications(
        after, 1000, topics=FOLLOWED_TOPICS, inclusive_of_start=False
    ):
        fanout.handle(app.mapper.to_domain_event(notification), notification.id)
        after = notification.id
    return after


def deliveries(store: PostgresWebhookStore, user_id: str) -> list[Any]:
    return [d for e in store.endpoints_of(user_id) for d in store.deliveries_of(e.id, limit=100)]


def test_events_of_users_without_endpoints_are_skipped_and_an_endpoint_registered_meanwhile_is_served(
    app: MediaTasks, store: PostgresWebhookStore
) -> None:
    app.create_user("bob", 1)
    app.create_user("alice", 1)
    for _ in range(5):
        app.grant_credits("bob", 1, "top-up")
    reads = CountedReads(app.repository)
    fanout = WebhookFanout(SimpleNamespace(repository=reads, recorder=app.recorder, name=app.name), store)
    position = follow(fanout, app, 0)
    assert reads.reads == 0, "no aggregate is read when no user has an endpoint"
    assert (store.tracking.max_tracking_id(app.name) or 0) < position, "the tracking row is not written per event"

    endpoint, _ = store.add_endpoint("alice", "https://hooks.example/a", ["account.credited"], "")
    app.grant_credits("bob", 1, "top-up")  # a user without an endpoint: still skipped
    app.grant_credits("alice", 2, "gift")  # past the head the follower last read: it reads the users again
    position = follow(fanout, app, position)
    assert reads.reads == 1, "only alice's account was read"
    [delivery] = deliveries(store, "alice")
    assert delivery.endpoint_id == endpoint.id and delivery.event_type == "account.credited"
    assert store.tracking.max_tracking_id(app.name) == position, "a delivery is written with its tracking row"

    for _ in range(TRACK_EVERY_EVENTS // 100):  # the position is still recorded now and then without deliveries
        app.grant_credits("bob", 1, "top-up")
    fanout._tracked_at = float("-inf")  # as if TRACK_EVERY_SECONDS had passed
    last = follow(fanout, app, position)
    assert position < (store.tracking.max_tracking_id(app.name) or 0) <= last
    assert reads.reads == 1
