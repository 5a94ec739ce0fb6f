"""Traces, metrics and logs of real tasks: the API server and the fake platform on loopback, in-memory exporters.

The process's telemetry is configured once (as the composition root does) with an in-memory span
exporter and metric reader; the submission goes through the real HTTP API (uvicorn on a free port)
and the attempt through the real pipeline, against the fake platform.
"""

from __future__ import annotations

import io
import json
import logging
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from infrastructure.api.app import create_api
from infrastructure.bootstrap import bootstrap, build_pipeline
from infrastructure.observability.logs import QUIET_LOGGERS, JsonFormatter, TraceContext
from infrastructure.observability.telemetry import configure_telemetry
from infrastructure.projection_runners import ProjectionRunners
from infrastructure.runtime import Runtime
from infrastructure.settings import Settings
from tests.support.fake_platform import FakePlatform
from tests.support.postgres import database_url, drop_schema

PROVIDER_KEY = "sk-live-" + secrets.token_hex(16)
SIGNATURE = "sig" + secrets.token_hex(16)
PHASES = {"metadata.cache_lookup", "provider.fetch", "video.download", "subtitles.extract", "event_store.append"}


@dataclass
class Observed:
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    log: io.StringIO


@dataclass
class Service:
    runtime: Runtime
    pipeline: Any
    url: str
    platform: FakePlatform

    def submit(self, media_url: str, output_type: str) -> tuple[uuid.UUID, str]:
        """POST /v1/tasks as a new user; returns the task id and the api key."""
        key = self.runtime.app.create_user("u" + uuid.uuid4().hex[:12], 10).api_key
        with trace.get_tracer(__name__).start_as_current_span("client"):  # httpx is instrumented here too
            r = httpx.post(
                self.url + "/v1/tasks",
                json={"url": media_url, "output_type": output_type, "languages": ["en"]},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            )
        assert r.status_code == 202, r.text
        return uuid.UUID(r.json()["task_id"]), key


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
    configure_telemetry(Settings(otel_exporter="none"), span_exporters=[spans], metric_readers=[reader])
    trace.get_tracer(__name__).start_span("probe").end()
    assert [s.name for s in spans.get_finished_spans()] == ["probe"], "telemetry was configured before this test"
    spans.clear()
    log = io.StringIO()
    handler = logging.StreamHandler(log)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(TraceContext())
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {name: logging.getLogger(name).level for name in ("", *QUIET_LOGGERS)}
    root.setLevel(logging.INFO)
    for name in QUIET_LOGGERS:  # as configure_logging leaves them in the service
        logging.getLogger(name).setLevel(logging.WARNING)
    yield Observed(spans, reader, log)
    root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="module")
def service(
    observed: Observed, pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    schema = f"telemetry_{uuid.uuid4().hex[:10]}"
    platform = FakePlatform(api_key=PROVIDER_KEY).start()
    settings = Settings(
        database_url=database_url(pg_database_one),
        postgres_schema=schema,
        data_dir=tmp_path_factory.mktemp("tel"),
        provider="http",
        provider_url=platform.provider_url,
        provider_key=PROVIDER_KEY,
        provider_host=platform.api_host,
        url_allow_cidrs=["127.0.0.1/32"],
        dispatch="none",
        catch_up_seconds=0.2,
        otel_exporter="none",
    )
    runtime = bootstrap(settings)
    projections = ProjectionRunners(runtime.env)
    api = create_api(runtime, projections=projections)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(api, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.02)
    try:
        yield Service(
            runtime, build_pipeline(runtime, "telemetry-test"), f"http://127.0.0.1:{sock.getsockname()[1]}", platform
        )
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        projections.stop()
        runtime.close()
        platform.stop()
        drop_schema(pg_database_one, schema)


def metric_points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    return [
        point
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


def metric_value(reader: InMemoryMetricReader, name: str, **attributes: str) -> float:
    """The sum (counters) or count (histograms) of the points whose attributes include these."""
    total = 0.0
    for point in metric_points(reader, name):
        if attributes.items() <= dict(point.attributes or {}).items():
            total += getattr(point, "value", None) if hasattr(point, "value") else point.count
    return total


def trace_of(spans: InMemorySpanExporter, root_name: str) -> tuple[ReadableSpan, list[ReadableSpan]]:
    """The one finished span of this name and the rest of its trace (a server span ends after its response)."""
    deadline = time.monotonic() + 5
    while not any(s.name == root_name for s in spans.get_finished_spans()) and time.monotonic() < deadline:
        time.sleep(0.01)
    finished = spans.get_finished_spans()
    roots = [s for s in finished if s.name == root_name]
    assert len(roots) == 1, [s.name for s in finished]
    root = roots[0]
    return root, [s for s in finished if s.context.trace_id == root.context.trace_id and s is not root]


def children(span: ReadableSpan, spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id]


def test_a_task_makes_a_span_tree_linked_to_its_submission(service: Service, observed: Observed) -> None:
    observed.spans.clear()
    size = 40_000
    task_id, _ = service.submit(service.platform.media_url("ok", size=size, sig=SIGNATURE), "video_and_subtitles")
    request_span, request_trace = trace_of(observed.spans, "POST /v1/tasks")
    assert not children(request_span, request_trace), "a request's own SQL statements are not traced (cost)"
    started = service.runtime.app.get_task(task_id)
    assert started.trace_context["traceparent"].split("-")[1] == f"{request_span.context.trace_id:032x}"

    outcome = service.pipeline.run(task_id)
    assert outcome.outcome == "extracted"
    root, spans = trace_of(observed.spans, "task.process")
    assert root.parent is None and root.context.trace_id != request_span.context.trace_id
    assert [link.context.trace_id for link in root.links] == [request_span.context.trace_id]
    assert root.attributes["mediatasks.task_id"] == str(task_id)
    assert (root.attributes["mediatasks.attempt"], root.attributes["mediatasks.platform"]) == (1, "tiktok")
    assert root.attributes["mediatasks.output_type"] == "video_and_subtitles"
    assert root.attributes["mediatasks.outcome"] == "extracted"
    assert root.status.status_code is not StatusCode.ERROR

    direct = children(root, spans)
    assert PHASES <= {s.name for s in direct}
    by_name = {s.name: s for s in direct}
    assert by_name["metadata.cache_lookup"].attributes["mediatasks.cache_hit"] is False
    assert by_name["video.download"].attributes["mediatasks.bytes"] == size
    upload = [s for s in children(by_name["video.download"], spans) if s.name == "blob.upload"]
    assert len(upload) == 1 and upload[0].attributes["mediatasks.bytes"] == size
    assert [s.name for s in children(by_name["subtitles.extract"], spans) if s.name == "blob.upload"] == ["blob.upload"]
    events = [s.attributes["mediatasks.event"] for s in direct if s.name == "event_store.append"]
    assert events[0] == "Downloading" and events[-1] == "Extracted"
    outgoing = [
        s
        for s in spans
        if s.kind.name == "CLIENT"
        and "http.request.method" in s.attributes
        or s.kind.name == "CLIENT"
        and "http.method" in s.attributes
    ]
    assert len(outgoing) >= 3, "the provider call, the video and the subtitle track are traced by httpx"
    appends = [s for s in direct if s.name == "event_store.append"]
    assert any(s.attributes.get("db.system") == "postgresql" for a in appends for s in children(a, spans)), (
        "psycopg traces the statements of a task's event_store.append"
    )

    lines = [json.loads(line) for line in observed.log.getvalue().splitlines()]
    done = [line for line in lines if line["message"] == "task extracted" and line.get("task_id") == str(task_id)]
    assert len(done) == 1
    assert {"timestamp", "level", "logger", "message", "task_id", "attempt", "trace_id", "span_id"} <= set(done[0])
    assert done[0]["trace_id"] == f"{root.context.trace_id:032x}"
    assert {"cache_lookup_ms", "provider_ms", "download_ms", "subtitles_ms", "total_ms"} <= set(done[0]["timings"])


def test_a_failed_task_records_its_error_code_and_counts(service: Service, observed: Observed) -> None:
    reader = observed.metrics
    before = {
        "failed": metric_value(reader, "mediatasks.tasks", outcome="failed", error_code="media_not_found"),
        "refunds": metric_value(reader, "mediatasks.refunds"),
        "deliveries": metric_value(reader, "mediatasks.deliveries", outcome="failed"),
        "durations": metric_value(reader, "mediatasks.task.duration", outcome="failed"),
    }
    observed.spans.clear()
    task_id, _ = service.submit(service.platform.media_url("404"), "video")
    assert service.pipeline.run(task_id).outcome == "failed"

    root, spans = trace_of(observed.spans, "task.process")
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["mediatasks.error_code"] == "media_not_found"
    assert root.attributes["mediatasks.outcome"] == "failed"
    fetch = [s for s in children(root, spans) if s.name == "provider.fetch"]
    assert len(fetch) == 1 and fetch[0].attributes["error.type"] == "media_not_found"
    assert "video.download" not in {s.name for s in spans}

    assert (
        metric_value(reader, "mediatasks.tasks", outcome="failed", error_code="media_not_found") == before["failed"] + 1
    )
    assert metric_value(reader, "mediatasks.deliveries", outcome="failed") == before["deliveries"] + 1
    assert metric_value(reader, "mediatasks.task.duration", outcome="failed") == before["durations"] + 1
    deadline = time.monotonic() + 10
    while metric_value(reader, "mediatasks.refunds") < before["refunds"] + 1:
        assert time.monotonic() < deadline, "the refund issuer did not count the refund"
        time.sleep(0.05)
    time.sleep(0.3)
    assert metric_value(reader, "mediatasks.refunds") == before["refunds"] + 1
    assert metric_value(reader, "mediatasks.attempts.active") == 0


def test_no_secret_reaches_a_span_or_a_log_line(service: Service, observed: Observed) -> None:
    observed.spans.clear()
    task_id, api_key = service.submit(service.platform.media_url("ok", size=10_000, sig=SIGNATURE), "video")
    assert service.pipeline.run(task_id).outcome == "extracted"
    assert any(
        r.path.startswith("/media/") and r.query.get("sig") == SIGNATURE for r in _video_requests(service.platform)
    ), "the signed query reached the media server (else this test proves nothing)"
    auth = {"Authorization": f"Bearer {api_key}"}
    with trace.get_tracer(__name__).start_as_current_span("client"):  # a sampled caller, as in submit()
        token = httpx.post(f"{service.url}/v1/tasks/{task_id}/stream-token", headers=auth, timeout=10).json()[
            "access_token"
        ]
        video = httpx.get(f"{service.url}/v1/tasks/{task_id}/video", params={"access_token": token}, timeout=10)
    assert video.status_code == 200, "the stream token was accepted (else this test proves nothing)"
    deadline = time.monotonic() + 5
    while not any(s.name.endswith("/video") for s in observed.spans.get_finished_spans()):
        assert time.monotonic() < deadline, "the video request's server span was not recorded"
        time.sleep(0.05)
    spans = observed.spans.get_finished_spans()
    assert len(spans) > 10
    for span in spans:
        text = json.dumps(
            {
                "attributes": dict(span.attributes or {}),
                "status": span.status.description,
                "events": [dict(e.attributes or {}) for e in span.events],
                "links": [dict(link.attributes or {}) for link in span.links],
            },
            default=str,
        )
        for secret in (PROVIDER_KEY, SIGNATURE, api_key, token):
            assert secret not in text, f"{secret[:6]}… in span {span.name}: {text}"
    log = observed.log.getvalue()
    assert str(task_id) in log
    for secret in (PROVIDER_KEY, SIGNATURE, api_key, token):
        assert secret not in log


def _video_requests(platform: FakePlatform) -> list[Any]:
    return [r for r in platform.requests if r.path.startswith("/media/")]
