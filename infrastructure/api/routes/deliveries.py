"""Deliveries pushed by a queue: QStash calls this with one task attempt per message."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from pydantic import BaseModel

from infrastructure.api.deps import DeliveriesDep
from infrastructure.api.errors import ApiError, responses
from infrastructure.delivery.qstash_signature import InvalidSignature

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/v1/deliveries", tags=["deliveries"])


class DeliveryOutcome(BaseModel):
    outcome: str
    attempt: int | None = None


async def raw_body(request: Request) -> bytes:
    """The request's bytes as sent: the signature covers exactly these."""
    return await request.body()


@router.post("/qstash", response_model=DeliveryOutcome, responses=responses(400, 401, 404, 409, 413, 429, 503))
def qstash_delivery(
    body: Annotated[bytes, Depends(raw_body)],
    deliveries: DeliveriesDep,
    upstash_signature: Annotated[str | None, Header(description="QStash's HS256 JWT over this request")] = None,
    upstash_message_id: Annotated[str | None, Header(max_length=200)] = None,
    upstash_retried: Annotated[str | None, Header(max_length=20, description="retries so far, from 0")] = None,
) -> DeliveryOutcome:
    """Run the attempt a QStash message names; 200 once handled, else QStash retries after Retry-After."""
    try:
        answer = deliveries.handle(upstash_signature, body, upstash_message_id, upstash_retried)
    except InvalidSignature as refused:
        logger.warning("QStash delivery refused", extra={"reason": refused.reason, "message_id": upstash_message_id})
        raise ApiError(401, "invalid_signature", "The Upstash-Signature header is missing or not valid.") from None
    if answer.status_code != 200:
        headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else {}
        if answer.non_retryable:
            headers["Upstash-NonRetryable-Error"] = "true"
        raise ApiError(answer.status_code, answer.outcome, answer.message, headers=headers)
    return DeliveryOutcome(outcome=answer.outcome, attempt=answer.attempt)
