"""The URL check at registration, and one-off task callbacks (`webhook_url` on `POST /v1/tasks`)."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from application.ports.errors import MediaError
from infrastructure.api.errors import ApiError

if TYPE_CHECKING:
    from infrastructure.postgres.webhook_store import PostgresWebhookStore
    from infrastructure.safe_http import UrlPolicy

TASK_CALLBACK_TYPES = ("task.extracted", "task.failed", "task.retrying", "account.refunded")


def check_endpoint_url(url_policy: UrlPolicy, url: str) -> None:
    """The SSRF guard at registration: the URL's resolved addresses must be public (or allowed)."""
    try:
        url_policy.check_url(url)
    except MediaError as refused:
        raise ApiError(
            422, refused.code, f"This webhook URL is refused: {refused.message}", refused.details or None
        ) from None


def check_task_callback(url_policy: UrlPolicy, webhooks: PostgresWebhookStore, user_id: str, url: str) -> None:
    """Before a submission with `webhook_url` is charged: the URL is allowed and the user can verify."""
    check_endpoint_url(url_policy, url)
    if not webhooks.default_secret_exists(user_id):
        raise ApiError(
            409,
            "no_default_secret",
            "Create your default webhook secret first "
            "(POST /v1/webhooks/default-secret): it signs every task's callback.",
        )


def add_task_callback(webhooks: PostgresWebhookStore, user_id: str, task_id: UUID, url: str) -> None:
    webhooks.add_task_endpoint(user_id, task_id, url, TASK_CALLBACK_TYPES)
