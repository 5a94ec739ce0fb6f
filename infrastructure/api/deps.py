"""Dependencies of the routes: the runtime's parts and the caller's identity."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from typing import Annotated, Any
from uuid import UUID

from fastapi import Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from application.mediatasks import MediaTasks, hash_api_key
from infrastructure.api.errors import ApiError
from projections.task_views import TaskViews

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")
AUTH_CACHE_SECONDS = 30.0
STREAM_TOKEN_SECONDS = 600


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


async def current_user(request: Request, app: AppDep, credentials: Credentials) -> str:
    """The caller's user id: from a 30 s cache of key hashes, else from the event store (in the thread pool)."""
    if credentials is None:
        raise _unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    cache: dict[str, tuple[str, float]] = request.app.state.auth_cache
    key_hash = hash_api_key(credentials.credentials)
    cached = cache.get(key_hash)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    user_id = await run_in_threadpool(app.authenticate, credentials.credentials)
    if user_id is None:
        raise _unauthorized("This API key is not valid.")
    if len(cache) > 10_000:
        cache.clear()
    cache[key_hash] = (user_id, time.monotonic() + AUTH_CACHE_SECONDS)
    return user_id


async def require_admin(request: Request, credentials: Credentials) -> None:
    token = request.app.state.runtime.settings.admin_token
    if credentials is None:
        raise _unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")
    if token is None or not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise _unauthorized("This admin token is not valid.")


CurrentUser = Annotated[str, Depends(current_user)]
AdminOnly = Depends(require_admin)


class StreamTokens:
    """Short-lived signed tokens that let one user read one task's stream and outputs from a URL.

    Browsers' EventSource, <video> and <a download> cannot send an Authorization header. A stream token
    is `base64url(user|task|expiry).signature`, HMAC-SHA256 with a key derived from the secrets every
    process of one deployment shares (database URL, admin token, schema), else a per-process random key.
    """

    def __init__(self, settings: Any) -> None:
        shared = [s.get_secret_value() for s in (settings.database_url, settings.admin_token) if s is not None]
        material = "\n".join([*shared, settings.postgres_schema]) if shared else secrets.token_hex(32)
        self._key = hashlib.sha256(b"mediatasks stream token\n" + material.encode()).digest()

    def issue(self, user_id: str, task_id: UUID, now: float | None = None) -> tuple[str, int]:
        expires = int((now or time.time()) + STREAM_TOKEN_SECONDS)
        payload = base64.urlsafe_b64encode(f"{user_id}|{task_id}|{expires}".encode()).rstrip(b"=").decode()
        return f"{payload}.{self._sign(payload)}", expires

    def user_of(self, token: str, task_id: UUID, now: float | None = None) -> str | None:
        """The user a valid, unexpired token for this task was issued to; None otherwise."""
        payload, _, signature = token.partition(".")
        if not signature or not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            user_id, task, expires = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")
        except ValueError:
            return None
        if task != str(task_id) or int(expires) < (now or time.time()):
            return None
        return user_id

    def _sign(self, payload: str) -> str:
        digest = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def stream_tokens(request: Request) -> StreamTokens:
    tokens = getattr(request.app.state, "stream_tokens", None)
    if tokens is None:
        tokens = request.app.state.stream_tokens = StreamTokens(request.app.state.runtime.settings)
    return tokens


async def reader_of_task(
    request: Request,
    task_id: UUID,
    app: AppDep,
    credentials: Credentials,
    access_token: Annotated[str | None, Query(max_length=300, description=(
        "a stream token from POST /v1/tasks/{task_id}/stream-token, for clients that cannot send headers"))] = None,
) -> str:
    """The caller: by `Authorization: Bearer <api key>`, or by a stream token for this very task."""
    if credentials is not None or access_token is None:
        return await current_user(request, app, credentials)
    user_id = stream_tokens(request).user_of(access_token, task_id)
    if user_id is None:
        raise _unauthorized("This stream token is not valid for this task, or it has expired.")
    return user_id


TaskReader = Annotated[str, Depends(reader_of_task)]
