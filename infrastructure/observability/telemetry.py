"""OpenTelemetry for one process: providers, exporters, instrumentation and the Prometheus registry.

`configure_telemetry(settings)` is called once by the composition root, before any database
connection is opened (so psycopg's pooled connections get `TaskStatements`' cursor factory). Application code only uses the
API (`trace.get_tracer(__name__)`, `metrics.get_meter(__name__)`); this module decides where spans
and metrics go:

- spans: nowhere (`MEDIATASKS_OTEL_EXPORTER=none`), to stderr (`console`) or over OTLP/HTTP
  (`otlp`, to the standard `OTEL_EXPORTER_OTLP_ENDPOINT`, default http://localhost:4318);
- metrics: always readable at `GET /metrics` (Prometheus text); with `console`/`otlp` also pushed
  every `OTEL_METRIC_EXPORT_INTERVAL` ms.

`MEDIATASKS_TELEMETRY=false` installs nothing: the API stays a no-op and /metrics is empty.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infrastructure.settings import Settings

logger = logging.getLogger(__name__)

SERVICE_NAME = "mediatasks"
UNTRACED_ROUTES = "/metrics,/healthz,/readyz"
PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST
MAX_COUNTED_LAG = 10_000  # the refund issuer's lag is counted up to this many events
URL_ATTRIBUTES = ("url.full", "http.url")  # the stable and the older HTTP semantic conventions


@dataclass
class Telemetry:
    """What configure_telemetry installed; `enabled` is False when telemetry is turned off."""

    enabled: bool
    registry: CollectorRegistry
    tracer_provider: Any = None
    meter_provider: Any = None
    records_spans: bool = False  # a span exporter is installed: the sampler keeps some spans
    _instrumentors: list[Any] = field(default_factory=list)

    def instrument_api(self, api: Any) -> None:
        """Server spans (sampled ones only) and the HTTP metric (one measurement per request) for an ASGI
        app, by one pure-ASGI middleware; the probes and /metrics are neither traced nor measured."""
        if not self.enabled:
            return
        from infrastructure.observability.http_metrics import RequestDurations

        durations = self.meter_provider.get_meter(__name__).create_histogram(
            "http.server.duration", unit="ms", description="Measures the duration of inbound HTTP requests."
        )
        api.add_middleware(
            RequestDurations,
            histogram=durations,
            excluded_paths=frozenset(UNTRACED_ROUTES.split(",")),
            tracer=self.server_tracer(),
        )

    def server_tracer(self) -> Any:
        """The tracer of the API's server spans: the SDK's, or `UnsampledSpans` when no span is ever
        recorded (no exporter) and the SDK does not count the spans it drops (its own metrics off)."""
        from infrastructure.observability.http_metrics import UnsampledSpans

        sdk_metrics = os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED, "").strip().lower() == "true"
        if self.records_spans or sdk_metrics:
            return self.tracer_provider.get_tracer("infrastructure.api")
        return UnsampledSpans(self.tracer_provider.id_generator)

    def observe_projection_lag(self, runtime: Any, projections: Any = None) -> None:
        """A gauge of how many events each projection is behind the head of the log."""
        if not self.enabled:
            return

        from projections.refund_issuer import RefundIssuer

        recorder, name = runtime.app.recorder, runtime.app.name

        def lag(_: CallbackOptions) -> Iterable[Observation]:
            try:
                head = recorder.max_notification_id() or 0
                found = [Observation(head - (runtime.views.max_tracking_id(name) or 0), {"projection": "task_views"})]
                if projections is not None:  # it follows Failed events only: count those it has not seen
                    position = projections.refunds_runner.projection.recorder.max_tracking_id(name) or 0
                    behind = recorder.select_notifications(
                        position, MAX_COUNTED_LAG, topics=RefundIssuer.topics, inclusive_of_start=False
                    )
                    found.append(Observation(len(behind), {"projection": "refund_issuer"}))
            except Exception:  # noqa: BLE001 - a scrape must not fail because the store is down
                logger.warning("projection lag unavailable")
                return []
            return found

        meter = self.meter_provider.get_meter(__name__)
        meter.create_observable_gauge(
            "mediatasks.projection.lag",
            callbacks=[lag],
            unit="{event}",
            description="Events between the head of the log and the projection's position",
        )

    def prometheus_text(self) -> bytes:
        return generate_latest(self.registry)

    def shutdown(self) -> None:
        """Flush and stop the exporters (spans still queued are sent)."""
        for instrumentor in self._instrumentors:
            instrumentor.uninstrument()
        self._instrumentors.clear()
        if self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


class ClientCallsWithinTraces(Sampler):
    """The root sampler: a share `ratio` of new traces is kept (by trace id), but a client call made
    outside any trace (a projection polling the event store, the dispatcher's LISTEN) starts none."""

    def __init__(self, ratio: float = 1.0) -> None:
        self.ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context: Any,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Any = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        if kind is SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self.ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"ClientCallsWithinTraces({self.ratio.rate})"


class TaskStatements:
    """psycopg's statement spans (opentelemetry-instrumentation-psycopg's traced cursor) inside a task's
    trace only: a request's and the group-commit writer's statements run unwrapped
    (infrastructure/postgres/statement_cursors.py)."""

    def __init__(self, tracer_provider: Any) -> None:
        from infrastructure.postgres.statement_cursors import CursorsWithinTasks

        self.cursors = CursorsWithinTasks(self._traced_cursors)
        self.tracer_provider = tracer_provider

    def _traced_cursors(self, connection: Any) -> Any:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        return PsycopgInstrumentor.instrument_connection(connection, self.tracer_provider).cursor_factory

    def instrument(self) -> None:
        self.cursors.install()

    def uninstrument(self) -> None:
        self.cursors.uninstall()


_current: Telemetry | None = None


def configure_telemetry(
    settings: Settings, *, span_exporters: Sequence[Any] = (), metric_readers: Sequence[Any] = ()
) -> Telemetry:
    """Install the tracer and meter providers and the instrumentation, once per process.

    span_exporters and metric_readers are added to those chosen by the settings (tests pass
    in-memory ones; their spans are exported synchronously). A second call returns the first result.
    """
    global _current
    if _current is not None:
        return _current
    registry = CollectorRegistry(auto_describe=True)
    if not settings.telemetry:
        _current = Telemetry(enabled=False, registry=registry)
        return _current

    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.environment_variables import OTEL_METRICS_EXEMPLAR_FILTER
    from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    resource = Resource.create(
        {
            "service.name": SERVICE_NAME,
            "service.version": _service_version(),
            "service.instance.id": str(uuid.uuid4()),
            "host.name": socket.gethostname(),
        }
    )
    processors = SynchronousMultiSpanProcessor()  # shared: psycopg's spans go where all others go
    span_exporter, metric_exporter = _exporters(settings.otel_exporter)
    # With no exporter a span would be recorded for nobody: none is (trace ids still propagate).
    records_spans = span_exporter is not None or bool(span_exporters)
    sampler = ParentBased(root=ClientCallsWithinTraces(settings.otel_trace_ratio)) if records_spans else ALWAYS_OFF
    tracer_provider = TracerProvider(resource=resource, active_span_processor=processors, sampler=sampler)
    statements_provider = TracerProvider(
        resource=resource,
        active_span_processor=processors,
        shutdown_on_exit=False,
        sampler=ParentBased(root=ALWAYS_OFF),  # a statement only below a sampled span
    )
    if span_exporter is not None:
        tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    for exporter in span_exporters:
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    readers = [PrometheusMetricReader(registry=registry), *metric_readers]
    if metric_exporter is not None:
        readers.append(PeriodicExportingMetricReader(metric_exporter))
    # Exemplars (the SDK's default: a trace id on each histogram bucket) are paid on every measurement
    # inside a sampled span and /metrics does not show them: off unless OTEL_METRICS_EXEMPLAR_FILTER asks.
    exemplars = None if os.environ.get(OTEL_METRICS_EXEMPLAR_FILTER) else AlwaysOffExemplarFilter()
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, exemplar_filter=exemplars)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)

    httpx_instrumentor = HTTPXClientInstrumentor()
    httpx_instrumentor.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, request_hook=_without_query
    )
    psycopg_instrumentor = TaskStatements(statements_provider)
    psycopg_instrumentor.instrument()
    _current = Telemetry(
        enabled=True,
        registry=registry,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        records_spans=records_spans,
        _instrumentors=[httpx_instrumentor, psycopg_instrumentor],
    )
    return _current


def _exporters(kind: str) -> tuple[Any, Any]:
    if kind == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr), ConsoleMetricExporter(out=sys.stderr)
    if kind == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(), OTLPMetricExporter()
    return None, None


def _without_query(span: Any, request: Any) -> None:
    """Outgoing URLs are recorded without their query: signed media URLs carry credentials there."""
    parts = urlsplit(str(request.url))
    if not parts.query or not span.is_recording():
        return
    bare = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))
    for key in URL_ATTRIBUTES:
        if key in (getattr(span, "attributes", None) or {}):
            span.set_attribute(key, bare)


def _service_version() -> str:
    try:
        return version("mediatasks")
    except PackageNotFoundError:
        return "unknown"
