"""The API's one middleware of its own: the body-size limit on the way in, the security and RateLimit
headers on the way out, by one wrapper of `send` (one coroutine frame per message, not three).

On the way in, a request whose Content-Length is not a number or is over `max_bytes` is answered 413
before the app runs, and a body that grows past it while being read raises `BodyTooLarge` (FastAPI's
handlers answer it 413; raised past them before the answer started, it is answered 413 here). On the way
out, the start of every answer gets the RateLimit headers `rate_limited` decided for the request and
`SECURITY_HEADERS`, each only where the route did not set that header itself.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infrastructure.api.limits import BodyTooLarge
from infrastructure.api.rate_limits import RATE_LIMIT_HEADERS
from infrastructure.api.security_headers import SECURITY_HEADERS


class ApiEdge:
    """The body-size limit and the response headers of every HTTP request (see the module)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.max_bytes):
                await self._refuse(scope, send)
                return
        max_bytes = self.max_bytes
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise BodyTooLarge(max_bytes)
            return message

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = with_edge_headers(scope, message.get("headers", ()))
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            if not started:
                await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        body: dict[str, Any] = {
            "error": {
                "code": "payload_too_large",
                "message": f"The request body may be at most {self.max_bytes} bytes.",
                "details": {"max_bytes": self.max_bytes},
            }
        }
        raw = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(raw)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": with_edge_headers(scope, headers)})
        await send({"type": "http.response.body", "body": raw})


def with_edge_headers(scope: Scope, headers: Any) -> list[tuple[bytes, bytes]]:
    """A new list: `headers`, then the request's RateLimit headers and SECURITY_HEADERS the route did not set."""
    completed = list(headers)
    present = set()
    content_type = b""
    for name, value in completed:
        name = name.lower()
        present.add(name)
        if name == b"content-type":
            content_type = value
    rate_limits = scope.get("state", {}).get(RATE_LIMIT_HEADERS)
    if rate_limits:
        for name, value in rate_limits.items():
            raw_name = name.lower().encode()
            if raw_name not in present:
                completed.append((raw_name, value.encode()))
    security = SECURITY_HEADERS[content_type.startswith(b"text/html"), scope.get("path", "").startswith("/v1/")]
    completed.extend(header for header in security if header[0] not in present)
    return completed
