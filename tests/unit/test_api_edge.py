"""The API's one middleware: the body-size limit, the security and RateLimit headers."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from infrastructure.api.edge import ApiEdge
from infrastructure.api.limits import BodyTooLarge
from infrastructure.api.rate_limits import RATE_LIMIT_HEADERS
from infrastructure.api.security_headers import API_POLICY, EVERY_RESPONSE, HTML_POLICY


def answer(headers: list[tuple[bytes, bytes]], rate_limits: dict[str, str] | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if rate_limits is not None:
            scope.setdefault("state", {})[RATE_LIMIT_HEADERS] = rate_limits
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


def call(app: Any, path: str = "/v1/tasks", headers: list[tuple[bytes, bytes]] | None = None, body: bytes = b"") -> Any:
    sent: list[dict[str, Any]] = []
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers or []}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(ApiEdge(app, max_bytes=10)(scope, receive, send))
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_every_answer_gets_the_security_headers_and_no_store_under_v1() -> None:
    route_headers = [(b"content-type", b"application/json")]
    status, headers, _ = call(answer(route_headers))
    assert status == 200
    for name, value in EVERY_RESPONSE.items():
        assert headers[name.encode()] == value.encode()
    assert headers[b"content-security-policy"] == API_POLICY.encode()
    assert headers[b"cache-control"] == b"no-store"
    assert route_headers == [(b"content-type", b"application/json")]  # the route's own list is not changed
    _, headers, _ = call(answer([(b"content-type", b"text/html; charset=utf-8")]), path="/docs")
    assert headers[b"content-security-policy"] == HTML_POLICY.encode()
    assert b"cache-control" not in headers


def test_a_routes_own_header_wins() -> None:
    own = [(b"content-type", b"text/html"), (b"Content-Security-Policy", b"script-src 'self'")]
    _, headers, _ = call(answer(own, rate_limits={"RateLimit": '"reads";r=1;t=1', "RateLimit-Policy": "p"}))
    assert headers[b"Content-Security-Policy"] == b"script-src 'self'"
    assert b"content-security-policy" not in headers
    assert headers[b"ratelimit"] == b'"reads";r=1;t=1'
    assert headers[b"ratelimit-policy"] == b"p"
    _, headers, _ = call(answer([(b"ratelimit", b"own")], rate_limits={"RateLimit": "decided"}))
    assert headers[b"ratelimit"] == b"own"


def test_a_body_over_the_limit_is_answered_413_with_the_security_headers() -> None:
    for request_headers, body in (
        ([(b"content-length", b"11")], b""),
        ([(b"content-length", b"x")], b""),
        ([], b"x" * 11),
    ):
        status, headers, raw = call(answer([]), headers=request_headers, body=body)
        assert status == 413
        assert json.loads(raw)["error"]["code"] == "payload_too_large"
        assert headers[b"x-frame-options"] == b"DENY"


def test_a_body_read_past_the_limit_raises_to_the_error_handlers() -> None:
    raised: list[BaseException] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await receive()
        except BodyTooLarge as e:
            raised.append(e)
        await send({"type": "http.response.start", "status": 413, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert call(app, body=b"x" * 11)[0] == 413
    assert raised and raised[0].status_code == 413
