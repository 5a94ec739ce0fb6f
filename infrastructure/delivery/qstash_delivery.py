"""One delivery from QStash: verify it, run the attempt through the pipeline, and decide the answer.

The answer tells QStash what to do next: 2xx when the delivery was handled (nothing to retry),
409 while another attempt holds the task's lease, 429/503 with `Retry-After` on a transient fault.
On the last delivery QStash will make, a transient failure is recorded as terminal instead.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from domain.errors import TaskNotFound
from domain.vocabulary import AttemptOutcome
from infrastructure.delivery.inline_dispatcher import retry_delay
from infrastructure.delivery.qstash_signature import QStashSignatureVerifier

logger = logging.getLogger(__name__)

HANDLED = (
    AttemptOutcome.EXTRACTED,
    AttemptOutcome.ALREADY_COMPLETED,
    AttemptOutcome.NOT_RETRYABLE,
    AttemptOutcome.FAILED,
    AttemptOutcome.LEASE_LOST,
)
RATE_LIMITED_CODES = ("rate_limited",)
UNAVAILABLE_RETRY_SECONDS = 5


@dataclass(frozen=True)
class DeliveryAnswer:
    """How to answer QStash: `status_code`, and `retry_after` seconds or `non_retryable` when not 2xx."""

    status_code: int
    outcome: str
    attempt: int | None = None
    retry_after: int | None = None
    non_retryable: bool = False
    message: str = ""


def parse_message(body: bytes) -> tuple[UUID, int]:
    """The task id and attempt of a published message `{"task_id": ..., "attempt": ...}`; ValueError if malformed."""
    try:
        message: Any = json.loads(body)
        task_id, attempt = UUID(message["task_id"]), message["attempt"]
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ValueError(f"not a task message: {error}") from error
    if not isinstance(attempt, int) or isinstance(attempt, bool) or attempt < 1:
        raise ValueError("attempt must be a positive whole number")
    return task_id, attempt


def retried_count(value: str | None) -> int:
    """`Upstash-Retried` as a number (0 when absent or unreadable)."""
    try:
        return max(0, int(value or 0))
    except ValueError:
        return 0


class QStashDeliveryHandler:
    """Runs verified deliveries through the same `TaskPipeline` as the inline dispatcher.

    `retries` is the `Upstash-Retries` every message is published with: the delivery whose
    `Upstash-Retried` reaches it is the last, so its transient failure becomes terminal.
    """

    def __init__(
        self, verifier: QStashSignatureVerifier, pipeline: Any, *, retries: int, retry_base_seconds: float
    ) -> None:
        self.verifier = verifier
        self.pipeline = pipeline
        self.retries = retries
        self.retry_base_seconds = retry_base_seconds

    def handle(
        self, signature: str | None, body: bytes, message_id: str | None, retried_header: str | None
    ) -> DeliveryAnswer:
        """Verify (raises `InvalidSignature`, having written nothing), then run the attempt."""
        self.verifier.verify(signature, body)
        try:
            task_id, attempt = parse_message(body)
        except ValueError as error:
            return DeliveryAnswer(400, "malformed_message", non_retryable=True, message=str(error))
        retried = retried_count(retried_header)
        last_delivery = retried >= self.retries
        delivery = {
            "via": "qstash",
            "message_id": message_id,
            "retried": retried,
            "published_attempt": attempt,
            **({"last_delivery": True} if last_delivery else {}),
        }
        try:
            outcome = self.pipeline.run(task_id, delivery, last_delivery=last_delivery)
        except TaskNotFound:
            return DeliveryAnswer(404, "task_not_found", non_retryable=True, message="There is no such task.")
        except Exception:  # noqa: BLE001 - the event store or the pool failed: let QStash retry
            logger.exception("delivery could not be handled", extra={"task_id": str(task_id), "message_id": message_id})
            return DeliveryAnswer(
                503,
                "unavailable",
                retry_after=UNAVAILABLE_RETRY_SECONDS,
                message="The delivery could not be handled now; retry later.",
            )
        return self._answer(outcome)

    def _answer(self, outcome: Any) -> DeliveryAnswer:
        if outcome.outcome in HANDLED:
            return DeliveryAnswer(200, outcome.outcome, outcome.attempt)
        if outcome.outcome == AttemptOutcome.ALREADY_PROCESSING:
            return DeliveryAnswer(
                409,
                "already_processing",
                outcome.attempt,
                retry_after=max(1, math.ceil(outcome.lease_remaining)),
                message=f"Attempt {outcome.attempt} holds this task.",
            )
        delay = retry_delay(outcome.attempt, outcome.retry_after, self.retry_base_seconds)
        status = 429 if outcome.error_code in RATE_LIMITED_CODES else 503
        return DeliveryAnswer(
            status,
            outcome.outcome,
            outcome.attempt,
            retry_after=max(1, math.ceil(delay)),
            message=f"Attempt {outcome.attempt} failed ({outcome.error_code}); retry later.",
        )
