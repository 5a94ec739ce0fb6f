"""Server spans never keep a request's query string (stream tokens travel in ?access_token=)."""

from __future__ import annotations

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from infrastructure.observability.telemetry import without_query


def test_query_strings_are_dropped_from_server_span_attributes() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    secret = "st.secret-token-value"
    with provider.get_tracer(__name__).start_as_current_span(
        "GET /v1/tasks/{task_id}/events",
        attributes={
            "http.url": f"http://127.0.0.1:8000/v1/tasks/abc/events?access_token={secret}",
            "url.full": f"http://127.0.0.1:8000/v1/tasks/abc/events?access_token={secret}",
            "http.target": f"/v1/tasks/abc/events?access_token={secret}",
            "url.query": f"access_token={secret}",
        },
    ) as span:
        without_query(span, {"query_string": f"access_token={secret}".encode(), "path": "/v1/tasks/abc/events"})
    [finished] = exporter.get_finished_spans()
    assert secret not in str(dict(finished.attributes))
    assert finished.attributes["http.url"] == "http://127.0.0.1:8000/v1/tasks/abc/events"
    assert finished.attributes["http.target"] == "/v1/tasks/abc/events"
