"""The fan-out: events of the log become webhook deliveries, from a tracked position.

Each event of a subscribed type is written as one delivery per enabled endpoint of its user that
subscribes to the event's webhook type, in the same transaction as the follower's tracking row;
after a crash the follower resumes from that row, and a delivery written twice is the same row
(its id, the `webhook-id`, is derived from the endpoint and the event's log position).

Most events belong to users with no endpoint: the follower keeps the set of users with one, read
with the log's head in one snapshot, and reads it again only for an event past that head (so it
holds every endpoint written before the event). An account's event of a user not in the set costs
nothing but the check; a task's event, an aggregate read only when some user has an endpoint. The
tracking row of events without deliveries is written every TRACK_EVERY_EVENTS events or
TRACK_EVERY_SECONDS, not each time: after a crash the follower handles those events again, and
they write nothing (or, for an endpoint registered since, the same deliveries: at least once).
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone
from typing import Any

from eventsourcing.persistence import Tracking
from eventsourcing.utils import get_topic

from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.api.routes.tasks import without_blob_uris
from infrastructure.postgres.webhook_store import NewDelivery, PostgresWebhookStore
from infrastructure.supervision import subscription_stopped_by

FOLLOWED = (MediaTask.Extracted, MediaTask.Failed, MediaTask.Processing, CreditAccount.Refunded, CreditAccount.Granted)
FOLLOWED_TOPICS = tuple(get_topic(c) for c in FOLLOWED)
TRACK_EVERY_EVENTS = 1000
TRACK_EVERY_SECONDS = 1.0


def webhook_type(event: Any) -> str | None:
    """The Standard Webhooks `type` of a domain event (None: not one webhooks carry)."""
    if isinstance(event, MediaTask.Extracted):
        return "task.extracted"
    if isinstance(event, MediaTask.Failed):
        return "task.failed" if event.terminal else "task.retrying"
    if isinstance(event, MediaTask.Processing):
        return "task.progress"
    if isinstance(event, CreditAccount.Refunded):
        return "account.refunded"
    if isinstance(event, CreditAccount.Granted):
        return "account.credited"
    return None


def task_data(task: Any) -> dict[str, Any]:
    return {
        "task_id": str(task.id),
        "url": task.url,
        "platform": task.platform,
        "output_type": task.output_type,
        "languages": list(task.languages),
        "status": task.status,
        "progress": task.progress,
        "stage": task.stage,
        "attempt": task.attempt,
        "error": task.error,
        "result": without_blob_uris(task.result),
    }


def ledger_data(account: Any, event: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"user_id": account.user_id, "amount": event.amount, "balance": account.balance}
    if isinstance(event, CreditAccount.Refunded):
        entry.update(task_id=str(event.task_id), attempt=event.attempt, kind="refund")
    else:
        entry.update(reason=event.reason, kind="grant")
    return entry


def payload(kind: str, event: Any, data: dict[str, Any]) -> str:
    """The body every attempt sends, byte for byte: `{type, timestamp, data}`."""
    timestamp = event.timestamp.astimezone(timezone.utc) if isinstance(event.timestamp, datetime) else event.timestamp
    return json.dumps(
        {"type": kind, "timestamp": timestamp.isoformat().replace("+00:00", "Z"), "data": data},
        separators=(",", ":"),
        default=str,
    )


class WebhookFanout:
    """Follows the log from its tracked position and writes the deliveries of each event."""

    name = "webhook-fanout"

    def __init__(self, app: Any, store: PostgresWebhookStore) -> None:
        self.app, self.store = app, store
        self._lock = threading.Lock()
        self._position: int | None = None
        self._tracked_position, self._tracked_at = 0, time.monotonic()
        self._users: frozenset[str] = frozenset()
        self._accounts: frozenset[Any] = frozenset()
        self._users_as_of = -1  # the log's head when `_users` was read

    def position(self) -> int | None:
        with self._lock:
            return self._position

    def run(self, stopping: threading.Event) -> None:
        position = self.store.tracking.max_tracking_id(self.app.name) or 0
        self._tracked_position, self._tracked_at = position, time.monotonic()
        subscription = self.app.recorder.subscribe(gt=position, topics=FOLLOWED_TOPICS)
        with subscription_stopped_by(stopping, subscription):
            for notification in subscription:
                self.handle(self.app.mapper.to_domain_event(notification), notification.id)

    def handle(self, event: Any, position: int) -> None:
        kind = webhook_type(event)
        deliveries: list[NewDelivery] = []
        if kind is not None and self._may_have_endpoints(event, position):
            aggregate = self.app.repository.get(event.originator_id, version=event.originator_version)
            task_id = event.originator_id if isinstance(aggregate, MediaTask) else getattr(event, "task_id", None)
            endpoints = (
                self.store.subscribed(aggregate.user_id, kind, task_id) if aggregate.user_id in self._users else []
            )
            if endpoints:
                data = task_data(aggregate) if isinstance(aggregate, MediaTask) else ledger_data(aggregate, event)
                body = payload(kind, event, data)
                deliveries = [NewDelivery(e.id, kind, body) for e in endpoints]
        if deliveries or self._tracking_due(position):
            self.store.fan_out(position, deliveries, Tracking(self.app.name, position))
            self._tracked_position, self._tracked_at = position, time.monotonic()
        with self._lock:
            self._position = position

    def _may_have_endpoints(self, event: Any, position: int) -> bool:
        """False when the event's user has no enabled endpoint (known without reading its aggregate)."""
        if position > self._users_as_of:
            users, self._users_as_of = self.store.users_with_endpoints(self.app.recorder.events_table_name)
            if users != self._users:  # the accounts' ids (a uuid5 each) only when the set changed
                self._users, self._accounts = users, frozenset(CreditAccount.id_for(user) for user in users)
        if not self._users:
            return False
        return event.originator_id in self._accounts or not isinstance(event, CreditAccount.Event)

    def _tracking_due(self, position: int) -> bool:
        return (
            position - self._tracked_position >= TRACK_EVERY_EVENTS
            or time.monotonic() - self._tracked_at >= TRACK_EVERY_SECONDS
        )
