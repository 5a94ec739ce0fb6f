"""The sender: due deliveries are signed (Standard Webhooks) and posted through the SSRF guard.

One delivery per endpoint is in flight at a time, in a bounded pool of threads, so a slow or dead
endpoint holds one thread and never delays another endpoint's deliveries. A delivery is claimed
with a lease (`FOR UPDATE SKIP LOCKED`); when the sender dies mid-delivery, the lease runs out and
the delivery is sent again with the same `webhook-id` (at least once; receivers dedup by it).
2xx is success; 410 disables the endpoint; anything else is retried after the next step of the
schedule (with jitter) until the schedule ends; an endpoint failing for `disable_after` is disabled.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from uuid import UUID

from standardwebhooks.webhooks import Webhook

from application.ports.errors import MediaError
from infrastructure.postgres.webhook_store import (
    FAILED,
    PENDING,
    SUCCEEDED,
    Attempt,
    Delivery,
    Endpoint,
    PostgresWebhookStore,
)
from infrastructure.safe_http import SafeFetcher

logger = logging.getLogger(__name__)

DEFAULT_SCHEDULE = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)
JITTER = 0.2  # each wait is the schedule's step ± 20 %
USER_AGENT = "mediatasks-webhooks/1"


def parse_schedule(text: str) -> tuple[float, ...]:
    """`0,5,300,...`: seconds before each attempt, the first counted from the event."""
    steps = tuple(float(part) for part in text.replace(" ", "").split(",") if part)
    if not steps or any(step < 0 for step in steps):
        raise ValueError("a webhook retry schedule is a comma-separated list of seconds, none negative")
    return steps


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
    """`v1,<sig>` for each secret, space separated (a rotated-out secret signs beside the new one)."""
    return " ".join(Webhook(secret).sign(msg_id, timestamp, body) for secret in secrets)


def next_attempt_delay(schedule: Sequence[float], attempts_made: int) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones (None: the schedule is over)."""
    if attempts_made >= len(schedule):
        return None
    step = schedule[attempts_made]
    return step * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not secrecy


class WebhookSender:
    """Sends due deliveries until stopped; each endpoint's deliveries one at a time."""

    name = "webhook-sender"

    def __init__(
        self,
        store: PostgresWebhookStore,
        fetcher: SafeFetcher,
        *,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        concurrency: int = 8,
        timeout_seconds: float = 15.0,
        disable_after: timedelta = timedelta(days=5),
        poll_seconds: float = 0.25,
    ) -> None:
        self.store, self.fetcher = store, fetcher
        self.schedule = tuple(schedule)
        self.concurrency = concurrency
        self.timeout_seconds = timeout_seconds
        self.lease = timedelta(seconds=timeout_seconds + 5)
        self.disable_after = disable_after
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._in_flight: set[UUID] = set()
        self._sent = 0

    def sent(self) -> int:
        with self._lock:
            return self._sent

    def run(self, stopping: threading.Event) -> None:
        with ThreadPoolExecutor(self.concurrency, thread_name_prefix="webhook") as pool:
            while not stopping.is_set():
                with self._lock:
                    busy = list(self._in_flight)
                free = self.concurrency - len(busy)
                if free > 0:
                    for endpoint_id in self.store.endpoints_due(busy, free):
                        with self._lock:
                            self._in_flight.add(endpoint_id)
                        pool.submit(self._drain, endpoint_id, stopping)
                stopping.wait(self.poll_seconds)

    def _drain(self, endpoint_id: UUID, stopping: threading.Event) -> None:
        """Send the endpoint's due deliveries one after the other, until none is due or it fails."""
        try:
            while not stopping.is_set():
                endpoint = self.store.endpoint(endpoint_id)
                if endpoint is None or not endpoint.enabled:
                    self.store.drop_pending(endpoint_id)
                    return
                delivery = self.store.claim_next(endpoint_id, self.lease)
                if delivery is None or not self.deliver(endpoint, delivery):
                    return
        except Exception:  # noqa: BLE001 - the lease brings the delivery back; the next poll tries again
            logger.exception("webhook delivery failed unexpectedly", extra={"endpoint_id": str(endpoint_id)})
        finally:
            with self._lock:
                self._in_flight.discard(endpoint_id)

    def deliver(self, endpoint: Endpoint, delivery: Delivery) -> bool:
        """One attempt, recorded; True when the endpoint took it."""
        now = datetime.now(timezone.utc)
        headers = {
            "webhook-id": delivery.id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature_header(endpoint.signing_secrets(now), delivery.id, now, delivery.payload),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        started = time.monotonic()
        status_code: int | None = None
        error: str | None = None
        try:
            status_code = self.fetcher.post(
                endpoint.url, delivery.payload.encode(), headers=headers, deadline_seconds=self.timeout_seconds
            )
        except MediaError as failed:
            error = f"{failed.code}: {failed.message}"[:300]
        latency_ms = (time.monotonic() - started) * 1000
        number = delivery.attempts + 1
        attempt = Attempt(number, now, status_code, round(latency_ms, 1), error)
        ok = status_code is not None and 200 <= status_code < 300
        if ok:
            self.store.record_attempt(delivery, attempt, status=SUCCEEDED, next_attempt_at=None)
        elif status_code == 410:
            self.store.record_attempt(delivery, attempt, status=FAILED, next_attempt_at=None)
            self.store.disable(endpoint.id, "the endpoint answered 410 Gone")
            self.store.drop_pending(endpoint.id)
        else:
            delay = next_attempt_delay(self.schedule, number)
            when = None if delay is None else datetime.now(timezone.utc) + timedelta(seconds=delay)
            self.store.record_attempt(delivery, attempt, status=PENDING if when else FAILED, next_attempt_at=when)
            reason = self.store.endpoint_answered(endpoint.id, False, self.disable_after)
            if reason is not None:
                self.store.drop_pending(endpoint.id)
        if ok:
            self.store.endpoint_answered(endpoint.id, True, self.disable_after)
            with self._lock:
                self._sent += 1
        logger.info(
            "webhook attempt",
            extra={
                "endpoint_id": str(endpoint.id),
                "webhook_id": delivery.id,
                "attempt": number,
                "status_code": status_code,
                "error": error,
                "latency_ms": round(latency_ms, 1),
            },
        )
        return ok
