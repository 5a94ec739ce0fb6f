"""Server spans never keep a request's query string (stream tokens travel in ?access_token=)."""

from __future__ import annotations

import asyncio
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from infrastructure.observability.http_metrics import RequestDurations


async def ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def test_a_server_span_has_the_path_and_status_but_not_the_query() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    histogram = MeterProvider().get_meter(__name__).create_histogram("http.server.duration")
    middleware = RequestDurations(ok, histogram, frozenset(), tracer=provider.get_tracer(__name__))
    secret = "st.secret-token-value"
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/tasks/abc/events",
        "query_string": f"access_token={secret}".encode(),
        "headers": [(b"traceparent", b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")],
    }
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    asyncio.run(middleware(scope, None, send))
    [finished] = exporter.get_finished_spans()
    assert secret not in str(dict(finished.attributes or {}))
    assert finished.kind is SpanKind.SERVER
    assert finished.attributes["http.target"] == "/v1/tasks/abc/events"
    assert finished.attributes["http.status_code"] == 200
    assert f"{finished.context.trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c", "the caller's traceparent"
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
