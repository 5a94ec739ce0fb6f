"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from infrastructure.api.deps import LagClockDep, ProjectionsDep, PublisherDep, RuntimeDep
from infrastructure.postgres.queries import log_positions

router = APIRouter(tags=["health"])

READY_LAG_EVENTS = 1000
PUBLISH_FAILING_SECONDS = 10.0
# The store is asked from these threads, so a probe that hangs (a pool waiting for a connection, a
# dead socket) cannot hold /readyz past its timeout; two are enough for a probe every second.
_probes = ThreadPoolExecutor(max_workers=2, thread_name_prefix="readiness-probe")


class Health(BaseModel):
    status: str


class FollowerState(BaseModel):
    name: str
    state: str
    since: float
    restarts: int
    last_error: str | None = None
    position: int | None = None
    progressed_at: float | None = None


class Readiness(BaseModel):
    status: str
    head: int | None = None
    views_position: int | None = None
    views_behind_seconds: float | None = None
    publisher_position: int | None = None
    followers: list[FollowerState] = []
    reason: str | None = None


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive (nothing else is checked: a database outage does not make it restart)."""
    return Health(status="ok")


def store_positions(runtime: Any, timeout: float) -> tuple[int, int]:
    """The head of the log and the read model's position, in one statement bounded by `timeout`."""
    views = runtime.views.current() if hasattr(runtime.views, "current") else runtime.views
    return log_positions(runtime.app.recorder, views.tracking_table_name, runtime.app.name, timeout)


def _not_ready(body: Readiness) -> JSONResponse:
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "1"})


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(
    runtime: RuntimeDep, projections: ProjectionsDep, publisher: PublisherDep, clock: LagClockDep
) -> Readiness | JSONResponse:
    """Ready when: the event store answers within MEDIATASKS_READY_TIMEOUT_SECONDS; every follower of
    this process is running (none restarting); the read model is within READY_LAG_EVENTS events and
    (where this process runs it) MEDIATASKS_READY_LAG_SECONDS of the head; and (with
    MEDIATASKS_DISPATCH=qstash) QStash has not refused every publish for PUBLISH_FAILING_SECONDS.

    Async, with the store asked from threads of its own: a server whose threads all wait for the
    database still answers this within its timeout."""
    timeout = runtime.settings.ready_timeout_seconds
    supervisor = getattr(runtime, "supervisor", None)
    followers = [FollowerState(**s.as_dict()) for s in supervisor.statuses()] if supervisor is not None else []
    try:
        probe = asyncio.wrap_future(_probes.submit(store_positions, runtime, timeout * 0.9))
        head, position = await asyncio.wait_for(probe, timeout=timeout)
    except TimeoutError:
        return _not_ready(
            Readiness(
                status="unavailable", followers=followers, reason=f"event store did not answer within {timeout:g} s"
            )
        )
    except Exception as e:  # noqa: BLE001 - any failure here means not ready
        return _not_ready(
            Readiness(status="unavailable", followers=followers, reason=f"event store unreachable: {type(e).__name__}")
        )
    down = [f for f in followers if f.state != "running"]
    if down:
        named = "; ".join(f"{f.name} is {f.state} ({f.restarts} restarts): {f.last_error}" for f in down)
        return _not_ready(
            Readiness(status="follower_down", head=head, views_position=position, followers=followers, reason=named)
        )
    if head - position > READY_LAG_EVENTS:
        return _not_ready(
            Readiness(
                status="lagging",
                head=head,
                views_position=position,
                followers=followers,
                reason=f"read model is {head - position} events behind",
            )
        )
    behind = None
    if projections is not None:
        behind = round(clock.observe(head, position), 3)
        if behind > runtime.settings.ready_lag_seconds:
            return _not_ready(
                Readiness(
                    status="lagging",
                    head=head,
                    views_position=position,
                    views_behind_seconds=behind,
                    followers=followers,
                    reason=f"read model has not shown the log's last {head - position} events for {behind:.0f} s",
                )
            )
    published = publisher.status() if publisher is not None else None
    if published is not None and published.failing_for() >= PUBLISH_FAILING_SECONDS:
        return _not_ready(
            Readiness(
                status="publishing_failed",
                head=head,
                views_position=position,
                publisher_position=published.position,
                followers=followers,
                reason=f"QStash has not taken a message for {int(published.failing_for())} s "
                f"({published.consecutive_failures} tries): {published.last_error}",
            )
        )
    return Readiness(
        status="ready",
        head=head,
        views_position=position,
        views_behind_seconds=behind,
        publisher_position=published.position if published is not None else None,
        followers=followers,
    )
