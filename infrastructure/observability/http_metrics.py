"""The server span and the HTTP metric of an API: one span (when sampled) and one measurement per request.

OpenTelemetry's ASGI/FastAPI instrumentation costs an eighth of the event loop per request (its own
middleware stack, five measurements, spans for every receive/send, URL parsing); this middleware keeps
what operators use: a server span named after the route template (`POST /v1/tasks`), continuing the
caller's `traceparent`, started only when the sampler keeps it, with the method, route, path (never
the query: stream tokens travel in ?access_token=) and status code; and the duration, under the same
name as before (`http.server.duration`, ms; `http_server_duration_milliseconds` at /metrics).
When no span is ever recorded (no exporter: the sampler drops every span), `UnsampledSpans` makes
each request's span context as the SDK's tracer would, without its sampler and span machinery.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any

from opentelemetry import context, propagate, trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, StatusCode, TraceFlags
from starlette.types import ASGIApp, Message, Receive, Scope, Send

TRACE_HEADERS = (b"traceparent", b"tracestate")
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)
_UNSAMPLED_RANDOM = TraceFlags(TraceFlags.DEFAULT | TraceFlags.RANDOM_TRACE_ID)


class UnsampledSpans:
    """A tracer for a provider whose sampler drops every span: `start_span` gives the span the SDK's
    `Tracer.start_span` gives then (non-recording; the parent's trace id, flags' random bit and trace
    state, or a new trace; a new span id; ids drawn in the same order from the same generator), so
    the span context that logs, propagation and the task's stored `trace_context` see is the same."""

    def __init__(self, id_generator: Any) -> None:
        self.ids = id_generator

    def start_span(self, name: str, context: Any = None, kind: SpanKind = SpanKind.INTERNAL) -> Span:
        parent = trace.get_current_span(context).get_span_context()
        if parent.is_valid:
            trace_id, state = parent.trace_id, parent.trace_state
            flags = _UNSAMPLED_RANDOM if parent.trace_flags.random_trace_id else _UNSAMPLED
        else:
            trace_id, state = self.ids.generate_trace_id(), None
            flags = _UNSAMPLED_RANDOM if self.ids.is_trace_id_random() else _UNSAMPLED
        return NonRecordingSpan(SpanContext(trace_id, self.ids.generate_span_id(), False, flags, state))


class RequestDurations:
    """Traces (when sampled) and records each HTTP request's duration once, by method, route template and status."""

    def __init__(self, app: ASGIApp, histogram: Any, excluded_paths: frozenset[str], tracer: Any = None) -> None:
        self.app = app
        self.histogram = histogram
        self.excluded_paths = excluded_paths
        self.tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.excluded_paths:
            await self.app(scope, receive, send)
            return
        start = perf_counter()
        status = 500
        span, token = self._start_span(scope)

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        except Exception as error:
            if span is not None and span.is_recording():
                span.record_exception(error)
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)  # the template, set on the scope by the router
            attributes = {"http.method": scope["method"], "http.status_code": status}
            if route:
                attributes["http.route"] = route
            self.histogram.record(round((perf_counter() - start) * 1000), attributes)
            if span is not None:
                self._end_span(span, token, {**attributes, "http.target": scope["path"]}, route)

    def _start_span(self, scope: Scope) -> tuple[Any, Any]:
        """The request's server span, current while the app runs (an unsampled one too, so that its
        context travels on to the task); a sampled one gets its attributes when it ends."""
        if self.tracer is None:
            return None, None
        carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"] if k in TRACE_HEADERS}
        parent = propagate.extract(carrier) if carrier else None
        span = self.tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def _end_span(span: Any, token: Any, attributes: dict[str, Any], route: str | None) -> None:
        context.detach(token)
        if not span.is_recording():
            return
        if route:
            span.update_name(f"{attributes['http.method']} {route}")
        span.set_attributes(attributes)  # with the path: set once, at the end (each is checked and copied)
        if attributes["http.status_code"] >= 500:
            span.set_status(StatusCode.ERROR)
        span.end()
