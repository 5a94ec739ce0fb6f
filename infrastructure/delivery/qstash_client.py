"""Client for QStash's publish API: one message per task attempt, deduplicated by task and attempt."""

from __future__ import annotations

import json
import logging
from types import TracebackType
from typing import Any

import httpx

from infrastructure.retry_after import retry_after_seconds

logger = logging.getLogger(__name__)


class PublishError(Exception):
    """QStash did not accept a publish call."""

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


class PublishRejected(PublishError):
    """QStash refused the message (4xx other than 429): publishing it again cannot help."""


class PublishUnavailable(PublishError):
    """QStash could not be reached or answered 429/5xx: publish again after `retry_after` or a backoff."""

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class QStashPublishClient:
    """Publishes `{"task_id", "attempt"}` messages to QStash for delivery to `destination_url`.

    The deduplication id `<task_id>-<attempt>` makes publishing the same attempt again harmless,
    so a caller may retry on `PublishUnavailable` (and after a crash) without a second delivery.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        destination_url: str,
        retries: int,
        client: httpx.Client | None = None,
        *,
        timeout_s: float = 10.0,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must not be negative")
        self._publish_url = f"{base_url.rstrip('/')}/v2/publish/{destination_url}"
        self._token = token
        self._retries = retries
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=timeout_s)

    def publish(self, task_id: str, attempt: int) -> str:
        """Publish one attempt of a task; return QStash's message id (the existing one if deduplicated)."""
        body = json.dumps({"task_id": task_id, "attempt": attempt}, separators=(",", ":"))
        headers = {
            "Authorization": f"Bearer {self._token}",
            "Content-Type": "application/json",
            "Upstash-Method": "POST",
            "Upstash-Deduplication-Id": f"{task_id}-{attempt}",
            "Upstash-Retries": str(self._retries),
        }
        try:
            response = self._client.post(self._publish_url, content=body, headers=headers)
        except httpx.TransportError as error:
            raise PublishUnavailable(f"QStash unreachable: {type(error).__name__}: {error}") from error
        return self._message_id(response, task_id, attempt)

    def _message_id(self, response: httpx.Response, task_id: str, attempt: int) -> str:
        status = response.status_code
        if status == 429 or status >= 500:
            raise PublishUnavailable(
                f"QStash answered {status}: {response.text[:200]}",
                status_code=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if not 200 <= status < 300:
            raise PublishRejected(
                f"QStash refused the message with {status}: {response.text[:200]}", status_code=status
            )
        try:
            answer: Any = response.json()
            message_id = answer["messageId"]
        except (ValueError, KeyError, TypeError) as error:
            raise PublishUnavailable(
                f"QStash answered {status} without a message id: {response.text[:200]}", status_code=status
            ) from error
        if not isinstance(message_id, str) or not message_id:
            raise PublishUnavailable(f"QStash answered {status} with message id {message_id!r}", status_code=status)
        if answer.get("deduplicated"):
            logger.info(
                "QStash already had this attempt",
                extra={"task_id": task_id, "attempt": attempt, "message_id": message_id},
            )
        return message_id

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> QStashPublishClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
