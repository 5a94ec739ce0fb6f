"""Starting webhook delivery in a process: the fan-out and the sender under the runtime's supervisor."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from infrastructure.postgres.webhook_store import PostgresWebhookStore
from infrastructure.safe_http import SafeFetcher, UrlPolicy
from infrastructure.webhooks.fanout import WebhookFanout
from infrastructure.webhooks.sender import WebhookSender, parse_schedule

CONNECT_TIMEOUT_SECONDS = 5.0


def start_webhook_delivery(runtime: Any) -> WebhookSender:
    """Follow the log into deliveries and send them, until the runtime is closed (one such process per
    database is enough; more share the work through leases)."""
    s = runtime.settings
    store = PostgresWebhookStore(runtime.app.recorder.datastore)
    fetcher = SafeFetcher(
        UrlPolicy(allow_cidrs=tuple(s.url_allow_cidrs)),
        connect_timeout=min(CONNECT_TIMEOUT_SECONDS, s.webhook_timeout_seconds),
        read_timeout=s.webhook_timeout_seconds,
        deadline_seconds=s.webhook_timeout_seconds,
        max_redirects=0,
        user_agent="mediatasks-webhooks/1",
    )
    fanout = WebhookFanout(runtime.app, store)
    sender = WebhookSender(
        store,
        fetcher,
        schedule=parse_schedule(s.webhook_retry_schedule),
        concurrency=s.webhook_concurrency,
        timeout_seconds=s.webhook_timeout_seconds,
        disable_after=timedelta(seconds=s.webhook_disable_after_seconds),
    )
    runtime.supervisor.add(fanout)
    runtime.supervisor.add(sender)
    runtime._closers.extend(
        [fetcher.close, lambda: runtime.supervisor.remove(sender.name), lambda: runtime.supervisor.remove(fanout.name)]
    )
    return sender
