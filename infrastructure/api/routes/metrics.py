"""Prometheus metrics of this process."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from infrastructure.api.deps import MetricsReader, TelemetryDep
from infrastructure.api.errors import responses
from infrastructure.observability.telemetry import PROMETHEUS_CONTENT_TYPE

router = APIRouter(tags=["operations"])


ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorBody"}  # refusals are JSON, unlike the metrics


class PrometheusResponse(PlainTextResponse):
    media_type = PROMETHEUS_CONTENT_TYPE


@router.get(
    "/metrics",
    response_class=PrometheusResponse,
    dependencies=[MetricsReader],
    responses={
        200: {
            "content": {PROMETHEUS_CONTENT_TYPE: {"schema": {"type": "string"}}},
            "description": "Prometheus text exposition format (empty when telemetry is off)",
        },
        **{
            status: {**declared, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
            for status, declared in responses(401, 429).items()
        },
    },
)
def prometheus_metrics(telemetry: TelemetryDep) -> PrometheusResponse:
    """Histograms, counters and gauges of the pipeline, the projections and the HTTP API (docs/observability.md);
    with the admin token unless MEDIATASKS_METRICS_AUTH=none."""
    body = telemetry.prometheus_text() if telemetry is not None else b""
    return PrometheusResponse(body)
