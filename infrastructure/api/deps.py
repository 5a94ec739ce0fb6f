"""Dependencies of the routes: the runtime's parts and the caller's identity."""

from __future__ import annotations

import hmac
import time
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from application.mediatasks import MediaTasks, hash_api_key
from infrastructure.api.errors import ApiError
from projections.task_views import TaskViews

bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <api key>`")
AUTH_CACHE_SECONDS = 30.0


def get_app(request: Request) -> MediaTasks:
    return request.app.state.runtime.app


def get_views(request: Request) -> TaskViews:
    return request.app.state.runtime.views


AppDep = Annotated[MediaTasks, Depends(get_app)]
ViewsDep = Annotated[TaskViews, Depends(get_views)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


def current_user(request: Request, app: AppDep, credentials: Credentials) -> str:
    if credentials is None:
        raise _unauthorized("Send your API key as 'Authorization: Bearer <key>'.")
    cache: dict[str, tuple[str, float]] = request.app.state.auth_cache
    key_hash = hash_api_key(credentials.credentials)
    cached = cache.get(key_hash)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    user_id = app.authenticate(credentials.credentials)
    if user_id is None:
        raise _unauthorized("This API key is not valid.")
    if len(cache) > 10_000:
        cache.clear()
    cache[key_hash] = (user_id, time.monotonic() + AUTH_CACHE_SECONDS)
    return user_id


def require_admin(request: Request, credentials: Credentials) -> None:
    token = request.app.state.runtime.settings.admin_token
    if credentials is None:
        raise _unauthorized("Send the admin token as 'Authorization: Bearer <token>'.")
    if token is None or not hmac.compare_digest(credentials.credentials.encode(), token.get_secret_value().encode()):
        raise _unauthorized("This admin token is not valid.")


CurrentUser = Annotated[str, Depends(current_user)]
AdminOnly = Depends(require_admin)


def runtime_of(request: Request) -> Any:
    return request.app.state.runtime
