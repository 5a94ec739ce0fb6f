"""POST /v1/tasks below FastAPI's dependency solver, for the requests it would accept.

FastAPI's per-request work for the hot route (body parsing through its handler, solving the
`Submitter` dependency and the Idempotency-Key header, validating the body through its field,
its routing through the included routers) was a fifth of the API process's CPU under load.
`SubmissionFastPath` is a route the API's router tries first; it takes only a submission FastAPI
would take: `Content-Type: application/json` (or with `; charset=utf-8`, as FastAPI reads it), a JSON object body that `SubmitTask` validates, at
most one of the route's header (`Idempotency-Key`: its name, default and validation are the route's own declared
parameter's, read from FastAPI's route, so the two cannot drift). For it, it calls the route's own dependency
(`submitter`: authentication, rate limit, active-task cap) and the route function itself
(`submit_task`), so answers, errors (raised to the same exception handlers) and headers (added by
the same middlewares) are the route's. Every other request (malformed, not JSON, a header FastAPI
would refuse) is handed, with its body, to FastAPI's router, which answers it as before; the
OpenAPI document still comes from the FastAPI route.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.routing import Match, Route
from starlette.types import Message, Receive, Scope, Send

from infrastructure.api.deps import bearer
from infrastructure.api.rate_limits import submitter
from infrastructure.api.routes.tasks import submit_task
from infrastructure.api.schemas import SubmitTask

DECLINED = "mediatasks.fast_path_declined"  # in the scope of a request handed on to FastAPI's router
# What FastAPI reads as JSON and the body's bytes as UTF-8 (as orjson does): the type, or it with a utf-8 charset.
_JSON_CONTENT_TYPE = re.compile(rb"application/json(\s*;\s*charset=\"?utf-8\"?)?", re.IGNORECASE)
_DECLINED = object()  # a header value FastAPI would refuse


class RouteHeader:
    """The one header parameter of a FastAPI route as FastAPI reads it: the header named by its alias, checked
    by the parameter's own field, its default when absent (one sent twice is left to FastAPI)."""

    __slots__ = ("_field", "_loc", "name")

    def __init__(self, api_route: Any) -> None:
        params = api_route.dependant.header_params
        if len(params) != 1:
            raise ValueError(f"the fast path reads one header parameter; {api_route.path} declares {len(params)}")
        (field,) = params
        if field.field_info.validation_alias not in (None, field.alias):
            raise ValueError(f"the fast path reads a header by its alias, not by {field.field_info.validation_alias}")
        self._field = field
        self._loc = ("header", field.alias)
        self.name = field.alias.lower().encode("latin-1")  # as ASGI servers send header names

    def value(self, sent: list[bytes]) -> Any:
        """What FastAPI would pass for these values of the header (`_DECLINED`: it would refuse them, or
        the fast path leaves them to it: more than one)."""
        if not sent:
            return _DECLINED if self._field.field_info.is_required() else self._field.get_default()
        if len(sent) > 1:
            return _DECLINED
        value, errors = self._field.validate(sent[0].decode("latin-1"), {}, loc=self._loc)
        return _DECLINED if errors else value


class SubmissionFastPath(Route):
    """POST /v1/tasks for the submissions FastAPI would accept; every other request to FastAPI's `router`."""

    def __init__(self, router: Any, api_route: Any) -> None:
        super().__init__(api_route.path, endpoint=self._unused, methods=["POST"], include_in_schema=False)
        self.router = router
        self.api_route = api_route  # FastAPI's route: the scope's "route" (its template names the metric)
        self.idempotency_key = RouteHeader(api_route)

    @staticmethod
    async def _unused(_: Request) -> None:  # pragma: no cover - `handle` serves the route
        raise NotImplementedError

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or scope["method"] != "POST" or DECLINED in scope:
            return Match.NONE, {}
        match, child_scope = super().matches(scope)
        if match is not Match.FULL:
            return Match.NONE, {}
        child_scope["route"] = self.api_route
        return match, child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            body = await request.body()
        except HTTPException:  # the body-size limit: raised on, as FastAPI's handler does
            raise
        except Exception as e:  # noqa: BLE001 - FastAPI's handler answers this way too
            raise HTTPException(status_code=400, detail="There was an error parsing the body") from e
        accepted = accepted_submission(scope["headers"], body, self.idempotency_key)
        if accepted is None:
            scope[DECLINED] = True
            await self.router.app(scope, _replayed(body, receive), send)
            return
        submission, idempotency_key = accepted
        caller = await submitter(request, await bearer(request))
        response = await submit_task(submission, caller, idempotency_key)
        await response(scope, receive, send)


def accepted_submission(
    headers: list[tuple[bytes, bytes]], body: bytes, idempotency_key: RouteHeader
) -> tuple[SubmitTask, str | None] | None:
    """The submission and its Idempotency-Key when FastAPI would accept both as they are, else None."""
    content_type = None
    keys: list[bytes] = []
    for name, value in headers:
        if name == b"content-type":
            if content_type is not None:
                return None
            content_type = value
        elif name == idempotency_key.name:
            keys.append(value)
    if content_type is None or not _JSON_CONTENT_TYPE.fullmatch(content_type):
        return None
    key = idempotency_key.value(keys)
    if key is _DECLINED:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return SubmitTask.model_validate(data), key
    except ValidationError:
        return None


def _replayed(body: bytes, receive: Receive) -> Receive:
    """`receive` that gives the body read already, then what the connection sends (a disconnect)."""
    given = False

    async def replay() -> Message:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
