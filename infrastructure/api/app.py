"""The FastAPI application, built around a Runtime from the composition root."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.telemetry import TelemetryConfig

from infrastructure.api.api_keys import KnownApiKeys
from infrastructure.api.edge import ApiEdge
from infrastructure.api.errors import install_error_handlers, responses
from infrastructure.api.limits import FailedAuthentications
from infrastructure.api.live import StreamsPerUser, TaskUpdateHub
from infrastructure.api.rate_limits import RateLimited, RequestLimits
from infrastructure.api.routes import (
    account,
    admin,
    deliveries,
    health,
    media,
    metrics,
    tasks,
    user_limits,
    web,
    webhooks,
)
from infrastructure.api.routes.health import ProjectionsProcess, ProjectionsProcessState
from infrastructure.api.stream_tokens import stream_tokens_for
from infrastructure.api.submission_fast_path import SubmissionFastPath
from infrastructure.postgres.user_limits import PostgresUserLimits
from infrastructure.postgres.webhook_store import PostgresWebhookStore
from infrastructure.safe_http import UrlPolicy

DESCRIPTION = """
Turn a social-media video link into stored subtitles and/or a stored video, paid in credits and
refunded automatically when a task fails. Authenticate with `Authorization: Bearer <api key>`.
Errors are `{"error": {"code", "message", "details"}}`.
"""

# FastAPI's own OpenTelemetry support would trace every request a second time (beside the contrib
# instrumentation installed by infrastructure/observability/telemetry.py) and log exception messages.
NATIVE_TELEMETRY_OFF: TelemetryConfig = {
    "tracing": False,
    "metrics": False,
    "logs": False,
    "operation_spans": False,
    "auto_configure": False,
}


def create_api(runtime: Any, *, projections: Any = None) -> FastAPI:
    hub = TaskUpdateHub(runtime.app, runtime.views)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub.start(runtime.supervisor)
        try:
            yield
        finally:
            hub.stop()

    api = FastAPI(
        title="mediatasks", version="1", description=DESCRIPTION, lifespan=lifespan, telemetry=NATIVE_TELEMETRY_OFF
    )
    api.state.runtime = runtime
    api.state.projections = projections
    api.state.hub = hub
    api.state.streams_per_user = StreamsPerUser(runtime.settings.max_streams_per_user)
    api.state.auth_failures = FailedAuthentications(
        runtime.settings.auth_failures_per_minute, runtime.settings.auth_failure_delay_seconds
    )
    api.state.stream_tokens = stream_tokens_for(runtime.settings, runtime.app.recorder.datastore)
    api.state.sse_ping_seconds = runtime.settings.sse_ping_seconds
    install_error_handlers(api)
    api.add_middleware(ApiEdge, max_bytes=runtime.settings.max_body_bytes)
    api.state.webhooks = PostgresWebhookStore(runtime.app.recorder.datastore)
    api.state.webhook_url_policy = UrlPolicy(allow_cidrs=tuple(runtime.settings.url_allow_cidrs))
    api.state.request_limits = limits = RequestLimits(
        runtime.settings, PostgresUserLimits(runtime.app.recorder.datastore), runtime.views
    )
    api.state.api_keys = KnownApiKeys(
        runtime.app.authenticate, runtime.app.user_of_key, ahead_of_first_request(limits, runtime.app)
    )
    api.include_router(tasks.submissions)
    # first: the hot route's submissions, served below FastAPI's dependency solver (the rest go on to FastAPI)
    api.router.routes.insert(0, SubmissionFastPath(api.router, submissions_route()))
    for router in (health.router, admin.router, user_limits.router, metrics.router, web.router):
        api.include_router(router)
    for router in (tasks.router, media.router, account.router, webhooks.router):  # per-API-key rates
        api.include_router(router, dependencies=[RateLimited], responses=responses(429))
    api.state.telemetry = getattr(runtime, "telemetry", None)
    if api.state.telemetry is not None:
        api.state.telemetry.instrument_api(api)
    if runtime.settings.projections_port:  # the projections process answers there (serve starts it)
        api.state.projections_process = ProjectionsProcess(projections_url(runtime.settings))
    return api


def ahead_of_first_request(limits: RequestLimits, app: Any) -> Callable[[str], None]:
    """What a user's first request would read, read when its API key is looked up (in that thread): its
    overrides and active tasks, and its account (MediaTasks.hold_account)."""

    def read(user_id: str) -> None:
        limits.know(user_id)
        app.hold_account(user_id)

    return read


def submissions_route() -> APIRoute:
    """FastAPI's route of POST /v1/tasks."""
    return next(r for r in tasks.submissions.routes if isinstance(r, APIRoute) and r.endpoint is tasks.submit_task)


def projections_url(settings: Any) -> str:
    """Where the projections process serves its /readyz: MEDIATASKS_HOST (loopback if it is a wildcard)."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host  # noqa: S104 - compared, not bound
    return f"http://{host}:{settings.projections_port}"


def include_qstash_deliveries(api: FastAPI, handler: Any) -> None:
    """Serve `POST /v1/deliveries/qstash` from this API, answered by `handler`."""
    api.state.qstash_deliveries = handler
    api.include_router(deliveries.router)


def create_delivery_api(runtime: Any, handler: Any) -> FastAPI:
    """A stateless worker's API: the QStash delivery endpoint, /healthz and /readyz, nothing else."""
    api = FastAPI(title="mediatasks worker", version="1", telemetry=NATIVE_TELEMETRY_OFF)
    api.state.runtime = runtime
    install_error_handlers(api)
    api.add_middleware(ApiEdge, max_bytes=runtime.settings.max_body_bytes)
    api.include_router(health.router)
    include_qstash_deliveries(api, handler)
    if getattr(runtime, "telemetry", None) is not None:
        runtime.telemetry.instrument_api(api)
    return api


def create_status_api(
    runtime: Any, projections: Any = None, *, publisher: Any = None, restarts: int | None = None
) -> FastAPI:
    """/healthz, /readyz and /metrics alone: for `mediatasks projections` (MEDIATASKS_PROJECTIONS_PORT)."""
    api = FastAPI(title="mediatasks projections", version="1", telemetry=NATIVE_TELEMETRY_OFF)
    api.state.runtime = runtime
    api.state.projections = projections
    api.state.publisher = publisher
    api.state.telemetry = getattr(runtime, "telemetry", None)
    api.state.auth_failures = FailedAuthentications(
        runtime.settings.auth_failures_per_minute, runtime.settings.auth_failure_delay_seconds
    )
    api.state.projections_process = ProjectionsProcessState(
        url=projections_url(runtime.settings), state="running", pid=os.getpid(), restarts=restarts
    )
    install_error_handlers(api)
    api.include_router(health.router)
    api.include_router(metrics.router)
    return api
