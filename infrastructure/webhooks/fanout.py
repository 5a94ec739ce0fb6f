"""The fan-out: events of the log become webhook deliveries, from a tracked position.

Each event of a subscribed type is written as one delivery per enabled endpoint of its user that
subscribes to the event's webhook type, in the same transaction as the follower's tracking row;
after a crash the follower resumes from that row, and a delivery written twice is the same row
(its id, the `webhook-id`, is derived from the endpoint and the event's log position).
"""

from __future__ import annotations

import json
import threading
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

    def position(self) -> int | None:
        with self._lock:
            return self._position

    def run(self, stopping: threading.Event) -> None:
        position = self.store.tracking.max_tracking_id(self.app.name) or 0
        subscription = self.app.recorder.subscribe(gt=position, topics=FOLLOWED_TOPICS)
        with subscription_stopped_by(stopping, subscription):
            for notification in subscription:
                self.handle(self.app.mapper.to_domain_event(notification), notification.id)

    def handle(self, event: Any, position: int) -> None:
        kind = webhook_type(event)
        deliveries: list[NewDelivery] = []
        if kind is not None:
            aggregate = self.app.repository.get(event.originator_id, version=event.originator_version)
            task_id = event.originator_id if isinstance(aggregate, MediaTask) else getattr(event, "task_id", None)
            endpoints = self.store.subscribed(aggregate.user_id, kind, task_id)
            if endpoints:
                data = task_data(aggregate) if isinstance(aggregate, MediaTask) else ledger_data(aggregate, event)
                body = payload(kind, event, data)
                deliveries = [NewDelivery(e.id, kind, body) for e in endpoints]
        self.store.fan_out(position, deliveries, Tracking(self.app.name, position))
        with self._lock:
            self._position = position
