"""GET /metrics of the real server process after a few tasks against the fake platform."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform


@pytest.fixture(scope="module")
def worker_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(platform, workers="2", otel_exporter="none")
    with running_service(pg_database_one, tmp_path_factory.mktemp("metrics"), **settings) as running:
        yield running


def finish(client: httpx.Client, task_id: str, *, refunded: bool) -> None:
    deadline = time.monotonic() + 30
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in ("extracted", "failed") and (task["refunded_credits"] > 0) == refunded:
            return
        assert time.monotonic() < deadline, f"task stuck: {task}"
        time.sleep(0.1)


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    """The sum of the samples of this name whose labels include these."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= ls)


def test_metrics_count_the_tasks_that_ran(worker_service: RunningService, platform: FakePlatform) -> None:
    _, key = worker_service.new_user(10)
    client = worker_service.client(key)
    submitted = []
    for url, output_type in (
        (platform.media_url("ok"), "subtitles"),
        (platform.media_url("ok"), "subtitles"),
        (platform.media_url("404"), "video"),
    ):
        r = client.post("/v1/tasks", json={"url": url, "output_type": output_type, "languages": ["en"]})
        assert r.status_code == 202, r.text
        submitted.append(r.json()["task_id"])
    for task_id, refunded in zip(submitted, (False, False, True), strict=True):
        finish(client, task_id, refunded=refunded)

    assert httpx.get(worker_service.url + "/metrics", timeout=10).status_code == 401, "the admin token is needed"
    response = httpx.get(worker_service.url + "/metrics", headers=worker_service.admin, timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found = samples(response.text)
    assert value(found, "mediatasks_tasks_total", outcome="extracted") == 2
    assert value(found, "mediatasks_tasks_total", outcome="failed", error_code="media_not_found") == 1
    assert value(found, "mediatasks_deliveries_total") >= 3
    assert value(found, "mediatasks_task_duration_seconds_count") == 3
    assert value(found, "mediatasks_task_duration_seconds_count", outcome="extracted", output_type="subtitles") == 2
    assert value(found, "mediatasks_phase_duration_seconds_count", phase="metadata.cache_lookup") == 3
    assert value(found, "mediatasks_phase_duration_seconds_count", phase="provider.fetch") == 3
    assert value(found, "mediatasks_phase_duration_seconds_count", phase="subtitles.extract") == 2
    assert value(found, "mediatasks_phase_duration_seconds_bucket", phase="subtitles.extract", le="+Inf") == 2
    assert value(found, "mediatasks_attempts_active") == 0
    assert value(found, "mediatasks_refunds_total") == 0, "the refund issuer runs in the projections process"
    lag = {dict(ls)["projection"] for (n, ls), v in found.items() if n == "mediatasks_projection_lag"}
    assert lag == {"task_views"}
    assert value(found, "http_server_duration_milliseconds_count") >= 5, "FastAPI's instrumentation measures requests"

    # The projections process (whose address /readyz gives) has the followers' metrics.
    projections = httpx.get(worker_service.url + "/readyz", timeout=10).json()["projections_process"]["url"]
    assert httpx.get(projections + "/metrics", timeout=10).status_code == 401, "the admin token is needed"
    theirs = samples(httpx.get(projections + "/metrics", headers=worker_service.admin, timeout=10).text)
    assert value(theirs, "mediatasks_refunds_total") == 1
    behind = {dict(ls)["projection"]: v for (n, ls), v in theirs.items() if n == "mediatasks_projection_lag"}
    assert set(behind) == {"task_views", "refund_issuer"}
    assert behind["refund_issuer"] == 0, "the refund was issued: no Failed event is left to follow"
