"""With no span exporter the API's server spans are `UnsampledSpans`': the span contexts the SDK's tracer
would make (logs, propagation and a task's stored trace_context see them), and the metric as before."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from opentelemetry import propagate, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import NonRecordingSpan, SpanKind
from prometheus_client import CollectorRegistry

from infrastructure.observability.http_metrics import RequestDurations, UnsampledSpans
from infrastructure.observability.telemetry import Telemetry


class CountingIds(IdGenerator):
    """Ids 1, 2, 3, … in the order they are asked for; `random` says whether trace ids are random."""

    def __init__(self, random: bool) -> None:
        self.next = itertools.count(1)
        self.random = random

    def generate_span_id(self) -> int:
        return next(self.next)

    def generate_trace_id(self) -> int:
        return next(self.next) << 64

    def is_trace_id_random(self) -> bool:
        return self.random


PARENTS = [
    None,
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03", "tracestate": "vendor=a,other=b"},
    {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-02"},
    {"traceparent": "00-00000000000000000000000000000000-b7ad6b7169203331-01"},  # invalid: a new trace
    {"traceparent": "not a traceparent"},
]


@pytest.mark.parametrize("random_ids", [True, False])
@pytest.mark.parametrize("carrier", PARENTS)
def test_the_span_the_sdk_makes_when_it_drops_every_span(carrier: dict[str, str] | None, random_ids: bool) -> None:
    sdk = TracerProvider(sampler=ALWAYS_OFF, id_generator=CountingIds(random_ids)).get_tracer(__name__)
    ours = UnsampledSpans(CountingIds(random_ids))
    for _ in range(3):
        parent = propagate.extract(carrier) if carrier else None
        expected = sdk.start_span("POST", context=parent, kind=SpanKind.SERVER)
        found = ours.start_span("POST", context=parent, kind=SpanKind.SERVER)
        assert type(found) is type(expected) is NonRecordingSpan and not found.is_recording()
        assert found.get_span_context() == expected.get_span_context()
        assert found.get_span_context().trace_flags == expected.get_span_context().trace_flags
        assert found.get_span_context().trace_state == expected.get_span_context().trace_state
        assert found.get_span_context().is_remote is expected.get_span_context().is_remote is False


def _api(records_spans: bool, reader: InMemoryMetricReader, seen: list[Any]) -> FastAPI:
    api = FastAPI()

    @api.post("/v1/things/{thing}")
    async def thing(thing: str) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        seen.append((trace.get_current_span(), carrier))
        return {"thing": thing}

    telemetry = Telemetry(
        enabled=True,
        registry=CollectorRegistry(),
        tracer_provider=TracerProvider(sampler=ALWAYS_OFF),
        meter_provider=MeterProvider(metric_readers=[reader]),
        records_spans=records_spans,
    )
    telemetry.instrument_api(api)
    return api


def _durations(reader: InMemoryMetricReader) -> list[tuple[dict[str, Any], int]]:
    data = reader.get_metrics_data()
    assert data is not None
    return [
        (dict(point.attributes), point.count)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "http.server.duration"
        for point in metric.data.data_points
    ]


@pytest.mark.parametrize("records_spans", [False, True])
def test_a_request_continues_the_callers_trace_and_is_measured_once(records_spans: bool) -> None:
    reader, seen = InMemoryMetricReader(), []
    client = TestClient(_api(records_spans, reader, seen))
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    assert client.post("/v1/things/a", headers={"traceparent": caller}).status_code == 200
    assert client.post("/v1/things/b").status_code == 200
    [(continued, carried), (new, carried_new)] = seen
    assert isinstance(continued, NonRecordingSpan) and isinstance(new, NonRecordingSpan)
    assert f"{continued.get_span_context().trace_id:032x}" == "0af7651916cd43dd8448eb211c80319c"
    assert carried["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")
    assert carried["traceparent"].endswith("-00"), "not sampled: nothing records it"
    assert carried["traceparent"].split("-")[2] != "b7ad6b7169203331", "the server span's own id"
    assert new.get_span_context().is_valid and carried_new["traceparent"].endswith("-02")
    attributes = {"http.method": "POST", "http.route": "/v1/things/{thing}", "http.status_code": 200}
    assert _durations(reader) == [(attributes, 2)]


def test_without_an_exporter_the_api_gets_unsampled_spans(monkeypatch: pytest.MonkeyPatch) -> None:
    def middleware_tracer(records_spans: bool) -> Any:
        api = _api(records_spans, InMemoryMetricReader(), [])
        [durations] = [m for m in api.user_middleware if m.cls is RequestDurations]
        return durations.kwargs["tracer"]

    assert isinstance(middleware_tracer(False), UnsampledSpans)
    assert not isinstance(middleware_tracer(True), UnsampledSpans)
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")  # it counts dropped spans too
    assert not isinstance(middleware_tracer(False), UnsampledSpans)


def test_an_unsampled_request_span_is_current_while_the_app_runs_and_detached_after() -> None:
    seen: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(trace.get_current_span())
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    histogram = MeterProvider().get_meter(__name__).create_histogram("http.server.duration")
    middleware = RequestDurations(app, histogram, frozenset(), tracer=UnsampledSpans(CountingIds(True)))

    async def send(message: Any) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": "/v1/account", "headers": []}
    asyncio.run(middleware(scope, None, send))
    [span] = seen
    assert span.get_span_context().is_valid and not span.is_recording()
    assert trace.get_current_span() is trace.INVALID_SPAN
