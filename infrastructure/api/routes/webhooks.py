"""Webhook endpoints of the caller (Standard Webhooks): register, list, change, rotate, deliveries."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

from domain.text import check_free_text
from infrastructure.api.deps import CurrentUser, UrlPolicyDep, WebhooksDep
from infrastructure.api.errors import ApiError, responses
from infrastructure.postgres.webhook_store import Delivery, Endpoint, PostgresWebhookStore
from infrastructure.webhooks.callbacks import check_endpoint_url
from infrastructure.webhooks.event_types import DEFAULT_EVENT_TYPES, EventType

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

OLD_SECRET_SIGNS_FOR = timedelta(hours=24)


class _Described(BaseModel):
    @field_validator("description", check_fields=False)
    @classmethod
    def _free_text(cls, value: str | None) -> str | None:
        return None if value is None else check_free_text(value, field="description")


class CreateWebhook(_Described):
    model_config = ConfigDict(extra="forbid")
    url: str = Field(min_length=1, max_length=2048, examples=["https://example.com/hooks/mediatasks"])
    event_types: list[EventType] = Field(
        default_factory=lambda: list(DEFAULT_EVENT_TYPES),
        min_length=1,
        max_length=6,
        description="task.progress is sent only when listed",
    )
    description: str = Field(default="", max_length=200)


class ChangeWebhook(_Described):
    model_config = ConfigDict(extra="forbid")
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    event_types: list[EventType] | None = Field(default=None, min_length=1, max_length=6)
    description: str | None = Field(default=None, max_length=200)
    enabled: bool | None = Field(default=None, description="true re-enables a disabled endpoint")


class WebhookOut(BaseModel):
    id: UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(description="why the service disabled it (410 Gone, failing for days)")
    failing_since: datetime | None
    created_at: datetime
    task_id: UUID | None = Field(default=None, description="set for a task's one-off callback (webhook_url)")


class CreatedWebhook(WebhookOut):
    secret: str = Field(description="`whsec_…`: shown only here (and by rotate-secret); verify signatures with it")


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class RotatedSecret(BaseModel):
    secret: str = Field(description="the new `whsec_…`; the previous one keeps signing beside it for 24 h")
    previous_expires_at: datetime


class AttemptOut(BaseModel):
    number: int
    at: datetime
    status_code: int | None
    latency_ms: float
    error: str | None


class DeliveryOut(BaseModel):
    id: str = Field(description="the `webhook-id` header: the same on every attempt")
    event_type: str
    position: int = Field(description="the event's position in the log")
    status: Literal["pending", "succeeded", "failed"]
    attempts: list[AttemptOut]
    next_attempt_at: datetime | None
    created_at: datetime
    payload: Any


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_before: int | None = Field(description="pass as ?before= for the next (older) page")


Store = WebhooksDep


def endpoint_out(endpoint: Endpoint) -> WebhookOut:
    return WebhookOut(
        id=endpoint.id,
        url=endpoint.url,
        event_types=endpoint.event_types,
        description=endpoint.description,
        enabled=endpoint.enabled,
        disabled_reason=endpoint.disabled_reason,
        failing_since=endpoint.failing_since,
        created_at=endpoint.created_at,
        task_id=endpoint.task_id,
    )


def delivery_out(delivery: Delivery) -> DeliveryOut:
    return DeliveryOut(
        id=delivery.id,
        event_type=delivery.event_type,
        position=delivery.position,
        status=delivery.status,
        next_attempt_at=delivery.next_attempt_at,  # type: ignore[arg-type]
        created_at=delivery.created_at,
        payload=json.loads(delivery.payload),
        attempts=[
            AttemptOut(number=a.number, at=a.at, status_code=a.status_code, latency_ms=a.latency_ms, error=a.error)
            for a in delivery.history
        ],
    )


def owned(store: PostgresWebhookStore, endpoint_id: UUID, user_id: str) -> Endpoint:
    endpoint = store.endpoint(endpoint_id)
    if endpoint is None or endpoint.user_id != user_id:
        raise ApiError(404, "webhook_not_found", "There is no such webhook endpoint.")
    return endpoint


@router.post("", response_model=CreatedWebhook, status_code=201, responses=responses(401, 413, 422, 429))
def create_webhook(body: CreateWebhook, user_id: CurrentUser, store: Store, url_policy: UrlPolicyDep) -> JSONResponse:
    """Register an endpoint; its signing secret is in this answer only."""
    check_endpoint_url(url_policy, body.url)
    endpoint, secret = store.add_endpoint(user_id, body.url, list(dict.fromkeys(body.event_types)), body.description)
    out = CreatedWebhook(**endpoint_out(endpoint).model_dump(), secret=secret)
    return JSONResponse(out.model_dump(mode="json"), status_code=201, headers={"Cache-Control": "no-store"})


class DefaultSecret(BaseModel):
    secret: str = Field(description="`whsec_…`: signs the callbacks of tasks submitted with webhook_url")


@router.post("/default-secret", response_model=DefaultSecret, status_code=201, responses=responses(401, 429))
def new_default_secret(user_id: CurrentUser, store: Store) -> JSONResponse:
    """Create (or rotate) your default secret; a previous one keeps signing beside it for 24 hours."""
    secret = store.new_default_secret(user_id, OLD_SECRET_SIGNS_FOR)
    return JSONResponse({"secret": secret}, status_code=201, headers={"Cache-Control": "no-store"})


@router.get("", response_model=WebhookList, responses=responses(401, 429))
def list_webhooks(user_id: CurrentUser, store: Store) -> WebhookList:
    """The caller's endpoints (secrets are never shown again)."""
    return WebhookList(webhooks=[endpoint_out(e) for e in store.endpoints_of(user_id)])


@router.get("/{webhook_id}", response_model=WebhookOut, responses=responses(401, 404, 422, 429))
def get_webhook(webhook_id: UUID, user_id: CurrentUser, store: Store) -> WebhookOut:
    return endpoint_out(owned(store, webhook_id, user_id))


@router.patch("/{webhook_id}", response_model=WebhookOut, responses=responses(401, 404, 413, 422, 429))
def change_webhook(
    webhook_id: UUID, body: ChangeWebhook, user_id: CurrentUser, store: Store, url_policy: UrlPolicyDep
) -> WebhookOut:
    """Change the URL, event types or description; `enabled: true` turns a disabled endpoint back on."""
    owned(store, webhook_id, user_id)
    changes = body.model_dump(exclude_none=True)
    if "url" in changes:
        check_endpoint_url(url_policy, changes["url"])
    changed = store.update_endpoint(webhook_id, changes)
    if changed is None:
        raise ApiError(404, "webhook_not_found", "There is no such webhook endpoint.")
    return endpoint_out(changed)


@router.delete("/{webhook_id}", status_code=204, response_class=Response, responses=responses(401, 404, 422, 429))
def delete_webhook(webhook_id: UUID, user_id: CurrentUser, store: Store) -> Response:
    owned(store, webhook_id, user_id)
    store.delete_endpoint(webhook_id)
    return Response(status_code=204)


@router.post("/{webhook_id}/rotate-secret", response_model=RotatedSecret, responses=responses(401, 404, 422, 429))
def rotate_secret(webhook_id: UUID, user_id: CurrentUser, store: Store) -> JSONResponse:
    """A new signing secret; the previous one signs beside it (two signatures) for 24 hours."""
    owned(store, webhook_id, user_id)
    secret = store.rotate_secret(webhook_id, OLD_SECRET_SIGNS_FOR)
    rotated = owned(store, webhook_id, user_id)
    expiries = [datetime.fromisoformat(s["expires_at"]) for s in rotated.secrets if s.get("expires_at")]
    out = RotatedSecret(secret=secret, previous_expires_at=max(expiries))
    return JSONResponse(out.model_dump(mode="json"), headers={"Cache-Control": "no-store"})


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList, responses=responses(401, 404, 422, 429))
def list_deliveries(
    webhook_id: UUID,
    user_id: CurrentUser,
    store: Store,
    limit: int = Query(20, ge=1, le=100),
    before: int | None = Query(None, ge=1, description="deliveries of events before this log position"),
) -> DeliveryList:
    """Deliveries to this endpoint, newest first: each attempt's status code and latency, the next retry."""
    owned(store, webhook_id, user_id)
    page = store.deliveries_of(webhook_id, limit=limit + 1, before=before)
    more = len(page) > limit
    page = page[:limit]
    return DeliveryList(
        deliveries=[delivery_out(d) for d in page], next_before=page[-1].position if more and page else None
    )


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=202,
    responses=responses(401, 404, 409, 422, 429),
)
def redeliver(
    webhook_id: UUID, user_id: CurrentUser, store: Store, delivery_id: str = Path(max_length=80)
) -> DeliveryOut:
    """Send this delivery again now (same `webhook-id`); the endpoint must be enabled."""
    endpoint = owned(store, webhook_id, user_id)
    if store.delivery(webhook_id, delivery_id) is None:
        raise ApiError(404, "delivery_not_found", "There is no such delivery to this endpoint.")
    if not endpoint.enabled:
        raise ApiError(
            409,
            "webhook_disabled",
            "Enable the endpoint first (PATCH enabled: true).",
            {"disabled_reason": endpoint.disabled_reason},
        )
    redelivered = store.redeliver(webhook_id, delivery_id)
    assert redelivered is not None
    return delivery_out(redelivered)
