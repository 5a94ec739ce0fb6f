"""Dependencies of the routes: the runtime's parts and the caller's identity."""

from __future__ import annotations

import hmac
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from application.mediatasks import MediaTasks, hash_api_key
from application.ports.blob_store import BlobStore
from infrastructure.api.api_keys import KnownApiKeys
from infrastructure.api.errors import ApiError
from infrastructure.api.live import StreamsPerUser, TaskUpdateHub
from infrastructure.api.stream_tokens import StreamTokens
from infrastructure.delivery.qstash_delivery import QStashDeliveryHandler
from infrastructure.delivery.qstash_outbox_publisher import QStashPublisher
from infrastructure.observability.telemetry import Telemetry
from infrastructure.postgres.webhook_store import PostgresWebhookStore
from infrastructure.projection_runners import ProjectionRunners
from infrastructure.runtime import Runtime
from infrastructure.safe_http import UrlPolicy
from infrastructure.settings import Settings
from infrastructure.supervision import LagClock
from projections.task_views import TaskViews

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")


# Dependencies that do no blocking I/O are `async def`: FastAPI runs a sync dependency in its thread
# pool, and each such hop costs a thread switch per request (the routes themselves stay sync).
async def get_app(request: Request) -> MediaTasks:
    return request.app.state.runtime.app


async def get_views(request: Request) -> TaskViews:
    return request.app.state.runtime.views


AppDep = Annotated[MediaTasks, Depends(get_app)]
ViewsDep = Annotated[TaskViews, Depends(get_views)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def _client_address(request: Request) -> str:
    return request.client.host if request.client else ""


async def _refused(request: Request, message: str) -> ApiError:
    """Count a failed authentication of the caller's address (and wait a little) before refusing it."""
    await request.app.state.auth_failures.record(_client_address(request))
    return _unauthorized(message)


async def current_user(request: Request, credentials: Credentials) -> str:
    """The caller's user id: from the keys this process knows (infrastructure/api/api_keys.py, invalid keys
    too), else looked up in the event store."""
    if credentials is None:
        raise _unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    user_id, _ = await authenticated(request, credentials)
    return user_id


async def authenticated(request: Request, credentials: HTTPAuthorizationCredentials) -> tuple[str, str]:
    """`current_user` for credentials sent: the caller's user id and its API key's hash (hashed once a request)."""
    keys: KnownApiKeys = request.app.state.api_keys
    key_hash = hash_api_key(credentials.credentials)
    known = keys.known(key_hash)
    if known is not None and known[0] is not None:
        return known[0], key_hash
    request.app.state.auth_failures.refuse_if_over(_client_address(request))
    if known is not None:  # a key found invalid moments ago: no second lookup
        raise await _refused(request, "This API key is not valid.")
    user_id = await keys.look_up(credentials.credentials, key_hash)
    if user_id is None:
        raise await _refused(request, "This API key is not valid.")
    return user_id, key_hash


async def require_admin(request: Request, credentials: Credentials) -> None:
    token = request.app.state.runtime.settings.admin_token
    if credentials is None:
        raise _unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")
    request.app.state.auth_failures.refuse_if_over(_client_address(request))
    if token is None or not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise await _refused(request, "This admin token is not valid.")


async def metrics_reader(request: Request, credentials: Credentials) -> None:
    """`GET /metrics` needs the admin token unless MEDIATASKS_METRICS_AUTH=none."""
    if request.app.state.runtime.settings.metrics_auth == "admin":
        await require_admin(request, credentials)


CurrentUser = Annotated[str, Depends(current_user)]
AdminOnly = Depends(require_admin)
MetricsReader = Depends(metrics_reader)


def stream_tokens(request: Request) -> StreamTokens:
    return request.app.state.stream_tokens


async def reader_of_task(
    request: Request,
    task_id: UUID,
    credentials: Credentials,
    access_token: Annotated[
        str | None,
        Query(
            max_length=300,
            description=(
                "a stream token from POST /v1/tasks/{task_id}/stream-token, for clients that cannot send headers"
            ),
        ),
    ] = None,
) -> str:
    """The caller: by `Authorization: Bearer <api key>`, or by a stream token for this very task."""
    if credentials is not None or access_token is None:
        return await current_user(request, credentials)
    request.app.state.auth_failures.refuse_if_over(_client_address(request))
    user_id = stream_tokens(request).user_of(access_token, task_id)
    if user_id is None:
        raise await _refused(request, "This stream token is not valid for this task, or it has expired.")
    return user_id


TaskReader = Annotated[str, Depends(reader_of_task)]


async def get_api_keys(request: Request) -> KnownApiKeys:
    return request.app.state.api_keys


async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_settings(request: Request) -> Settings:
    return request.app.state.runtime.settings


async def get_blobs(request: Request) -> BlobStore:
    return request.app.state.runtime.blobs


async def get_telemetry(request: Request) -> Telemetry | None:
    return request.app.state.telemetry


async def get_stream_tokens(request: Request) -> StreamTokens:
    return stream_tokens(request)


async def get_hub(request: Request) -> TaskUpdateHub:
    return request.app.state.hub


async def get_open_streams(request: Request) -> StreamsPerUser:
    return request.app.state.streams_per_user


async def get_sse_ping_seconds(request: Request) -> float:
    return request.app.state.sse_ping_seconds


async def get_deliveries(request: Request) -> QStashDeliveryHandler:
    return request.app.state.qstash_deliveries


async def get_projections(request: Request) -> ProjectionRunners | None:
    """The projection runners of this process; None where another process runs them."""
    return getattr(request.app.state, "projections", None)


async def get_projections_process(request: Request) -> Any:
    """For the API of `serve`: where to ask the projections process (health.ProjectionsProcess); in that
    process itself: its own state (health.ProjectionsProcessState); elsewhere None."""
    return getattr(request.app.state, "projections_process", None)


async def get_publisher(request: Request) -> QStashPublisher | None:
    """The QStash outbox publisher of this process, if it runs one."""
    return getattr(request.app.state, "publisher", None)


async def get_lag_clock(request: Request) -> LagClock:
    """How long the read model has been behind, remembered between readiness probes."""
    clock = getattr(request.app.state, "lag_clock", None)
    if clock is None:
        clock = request.app.state.lag_clock = LagClock()
    return clock


async def get_webhooks(request: Request) -> PostgresWebhookStore:
    return request.app.state.webhooks


async def get_webhook_url_policy(request: Request) -> UrlPolicy:
    """The SSRF guard a webhook URL passes at registration."""
    return request.app.state.webhook_url_policy


ApiKeysDep = Annotated[KnownApiKeys, Depends(get_api_keys)]
RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
TelemetryDep = Annotated[Telemetry | None, Depends(get_telemetry)]
StreamTokensDep = Annotated[StreamTokens, Depends(get_stream_tokens)]
HubDep = Annotated[TaskUpdateHub, Depends(get_hub)]
OpenStreamsDep = Annotated[StreamsPerUser, Depends(get_open_streams)]
SsePingDep = Annotated[float, Depends(get_sse_ping_seconds)]
DeliveriesDep = Annotated[QStashDeliveryHandler, Depends(get_deliveries)]
ProjectionsDep = Annotated[ProjectionRunners | None, Depends(get_projections)]
PublisherDep = Annotated[QStashPublisher | None, Depends(get_publisher)]
ProjectionsProcessDep = Annotated[Any, Depends(get_projections_process)]
LagClockDep = Annotated[LagClock, Depends(get_lag_clock)]
WebhooksDep = Annotated[PostgresWebhookStore, Depends(get_webhooks)]
UrlPolicyDep = Annotated[UrlPolicy, Depends(get_webhook_url_policy)]
