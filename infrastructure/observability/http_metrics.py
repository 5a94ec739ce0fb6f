"""The HTTP metric of an API: one measurement per request.

OpenTelemetry's ASGI instrumentation records five per request (active requests up and down, the
duration, the request and the response size), each aggregated for every metric reader; here the
FastAPI instrumentation keeps the server span and this middleware records the duration alone, under
the same name (`http.server.duration`, ms; `http_server_duration_milliseconds` at /metrics).
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class RequestDurations:
    """Records each HTTP request's duration once, by method, route template and status code."""

    def __init__(self, app: ASGIApp, histogram: Any, excluded_paths: frozenset[str]) -> None:
        self.app = app
        self.histogram = histogram
        self.excluded_paths = excluded_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", None)  # the template, set on the scope by the router
            attributes = {"http.method": scope["method"], "http.status_code": status}
            if route:
                attributes["http.route"] = route
            self.histogram.record(round((perf_counter() - start) * 1000), attributes)
