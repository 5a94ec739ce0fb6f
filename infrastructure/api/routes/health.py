"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

router = APIRouter(tags=["health"])

READY_LAG_EVENTS = 1000
PUBLISH_FAILING_SECONDS = 10.0


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    head: int | None = None
    views_position: int | None = None
    publisher_position: int | None = None
    reason: str | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(request: Request) -> Readiness | JSONResponse:
    """The event store answers, the read model is within READY_LAG_EVENTS of the head, and (with
    MEDIATASKS_DISPATCH=qstash) QStash has not refused every publish for PUBLISH_FAILING_SECONDS."""
    runtime = request.app.state.runtime
    try:
        head = runtime.app.recorder.max_notification_id() or 0
        position = runtime.views.max_tracking_id(runtime.app.name) or 0
    except Exception as e:  # noqa: BLE001 - any failure here means not ready
        body = Readiness(status="unavailable", reason=f"event store unreachable: {type(e).__name__}")
        return JSONResponse(body.model_dump(), status_code=503)
    if head - position > READY_LAG_EVENTS:
        body = Readiness(status="lagging", head=head, views_position=position,
                         reason=f"read model is {head - position} events behind")
        return JSONResponse(body.model_dump(), status_code=503)
    publisher = getattr(request.app.state, "publisher", None)
    published = publisher.status() if publisher is not None else None
    if published is not None and published.failing_for() >= PUBLISH_FAILING_SECONDS:
        body = Readiness(status="publishing_failed", head=head, views_position=position,
                         publisher_position=published.position,
                         reason=f"QStash has not taken a message for {int(published.failing_for())} s "
                                f"({published.consecutive_failures} tries): {published.last_error}")
        return JSONResponse(body.model_dump(), status_code=503)
    return Readiness(status="ready", head=head, views_position=position,
                     publisher_position=published.position if published is not None else None)
