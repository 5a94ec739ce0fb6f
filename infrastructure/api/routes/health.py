"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from infrastructure.api.deps import LagClockDep, ProjectionsDep, ProjectionsProcessDep, PublisherDep, RuntimeDep
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


class ProjectionsProcessState(BaseModel):
    """The projections process as the API sees it: `running` (it answered its /readyz) or `down`."""

    url: str
    state: str
    pid: int | None = None
    restarts: int | None = None


class Readiness(BaseModel):
    status: str
    head: int | None = None
    views_position: int | None = None
    views_behind_seconds: float | None = None
    publisher_position: int | None = None
    followers: list[FollowerState] = []
    projections_process: ProjectionsProcessState | None = None
    reason: str | None = None


class ProjectionsProcess:
    """Where this API asks the projections process for its readiness (its /readyz, over loopback)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: httpx.AsyncClient | None = None

    async def readiness(self, timeout: float) -> Readiness | None:
        """Its /readyz answer (ready or not), or None when nothing answered within `timeout`."""
        if self._client is None:  # made in the event loop that serves the probes
            self._client = httpx.AsyncClient(base_url=self.url, timeout=timeout)
        try:
            answer = await self._client.get("/readyz")
            return Readiness.model_validate(answer.json())
        except (httpx.HTTPError, ValueError):
            return None

    def down(self) -> ProjectionsProcessState:
        return ProjectionsProcessState(url=self.url, state="down")


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
    runtime: RuntimeDep,
    projections: ProjectionsDep,
    publisher: PublisherDep,
    clock: LagClockDep,
    projections_process: ProjectionsProcessDep,
) -> Readiness | JSONResponse:
    """Ready when: the event store answers within MEDIATASKS_READY_TIMEOUT_SECONDS; every follower of
    this process is running (none restarting); the read model is within READY_LAG_EVENTS events and
    (where this process runs it) MEDIATASKS_READY_LAG_SECONDS of the head; (with
    MEDIATASKS_DISPATCH=qstash) QStash has not refused every publish for PUBLISH_FAILING_SECONDS;
    and (for the API of `serve`) the projections process answers its own /readyz with 200: if it
    does not answer, `projections_down`; if it answers 503, its status and reason.

    Async, with the store asked from threads of its own: a server whose threads all wait for the
    database still answers this within its timeout."""
    theirs = None  # the projections process is asked while this one checks itself: one timeout for both
    if isinstance(projections_process, ProjectionsProcess):
        theirs = asyncio.ensure_future(projections_process.readiness(runtime.settings.ready_timeout_seconds))
    ready = await _own_readiness(runtime, projections, publisher, clock)
    if isinstance(projections_process, ProjectionsProcessState):  # this is the projections process
        ready.projections_process = projections_process
    if theirs is not None:
        if ready.status == "ready":
            _with_projections_process(ready, projections_process, await theirs)
        else:
            theirs.cancel()
    return ready if ready.status == "ready" else _not_ready(ready)


def _with_projections_process(ready: Readiness, process: ProjectionsProcess, theirs: Readiness | None) -> None:
    if theirs is None:
        ready.status, ready.projections_process = "projections_down", process.down()
        ready.reason = (
            "the projections process (read model, refund issuer, other followers) does not answer at "
            f"{process.url}; serve starts it again"
        )
        return
    ready.followers += theirs.followers
    ready.projections_process = theirs.projections_process
    ready.views_behind_seconds, ready.publisher_position = theirs.views_behind_seconds, theirs.publisher_position
    if theirs.status != "ready":
        ready.status, ready.reason = theirs.status, f"projections process: {theirs.reason}"


async def _own_readiness(runtime: Any, projections: Any, publisher: Any, clock: Any) -> Readiness:
    """This process's readiness (its status is `ready` or says what is not)."""
    timeout = runtime.settings.ready_timeout_seconds
    supervisor = getattr(runtime, "supervisor", None)
    followers = [FollowerState(**s.as_dict()) for s in supervisor.statuses()] if supervisor is not None else []
    try:
        probe = asyncio.wrap_future(_probes.submit(store_positions, runtime, timeout * 0.9))
        head, position = await asyncio.wait_for(probe, timeout=timeout)
    except TimeoutError:
        return Readiness(
            status="unavailable", followers=followers, reason=f"event store did not answer within {timeout:g} s"
        )
    except Exception as e:  # noqa: BLE001 - any failure here means not ready
        return Readiness(
            status="unavailable", followers=followers, reason=f"event store unreachable: {type(e).__name__}"
        )
    down = [f for f in followers if f.state != "running"]
    if down:
        named = "; ".join(f"{f.name} is {f.state} ({f.restarts} restarts): {f.last_error}" for f in down)
        return Readiness(status="follower_down", head=head, views_position=position, followers=followers, reason=named)
    if head - position > READY_LAG_EVENTS:
        return Readiness(
            status="lagging",
            head=head,
            views_position=position,
            followers=followers,
            reason=f"read model is {head - position} events behind",
        )
    behind = None
    if projections is not None:
        behind = round(clock.observe(head, position), 3)
        if behind > runtime.settings.ready_lag_seconds:
            return Readiness(
                status="lagging",
                head=head,
                views_position=position,
                views_behind_seconds=behind,
                followers=followers,
                reason=f"read model has not shown the log's last {head - position} events for {behind:.0f} s",
            )
    published = publisher.status() if publisher is not None else None
    if published is not None and published.failing_for() >= PUBLISH_FAILING_SECONDS:
        return Readiness(
            status="publishing_failed",
            head=head,
            views_position=position,
            publisher_position=published.position,
            followers=followers,
            reason=f"QStash has not taken a message for {int(published.failing_for())} s "
            f"({published.consecutive_failures} tries): {published.last_error}",
        )
    return Readiness(
        status="ready",
        head=head,
        views_position=position,
        views_behind_seconds=behind,
        publisher_position=published.position if published is not None else None,
        followers=followers,
    )
