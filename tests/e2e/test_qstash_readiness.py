"""/readyz of `mediatasks serve` with MEDIATASKS_DISPATCH=qstash while QStash refuses every publish."""

from __future__ import annotations

import time

import httpx
import pytest

from infrastructure.api.routes.health import PUBLISH_FAILING_SECONDS
from tests.e2e.conftest import running_service
from tests.support.qstash_emulator import QStashEmulator


def readyz(url: str) -> httpx.Response:
    return httpx.get(url + "/readyz", timeout=10)


@pytest.mark.slow
def test_readyz_reports_failing_publishes_until_qstash_takes_the_message(pg_database_one, tmp_path) -> None:
    with QStashEmulator(max_retries=0) as qstash:
        qstash.route("https://mediatasks.example", "http://127.0.0.1:9")  # deliveries go nowhere
        qstash.fail_publishes(503, count=5)  # retried after 0.5, 1, 2, 4 and 8 s: taken after ~15.5 s
        with running_service(
            pg_database_one,
            tmp_path,
            "--no-dispatch",
            dispatch="qstash",
            telemetry="false",
            public_url="https://mediatasks.example",
            # a probe slowed past 1 s by a loaded machine answers 503 `unavailable`, not what is tested here
            ready_timeout_seconds="5",
            qstash_url=qstash.url,
            qstash_token=qstash.token,
        ) as service:
            _, key = service.new_user(5)
            r = service.client(key).post(
                "/v1/tasks", json={"url": "https://youtu.be/dQw4w9WgXcQ", "output_type": "subtitles"}
            )
            assert r.status_code == 202
            failing_from = time.monotonic()
            deadline = failing_from + PUBLISH_FAILING_SECONDS + 15
            while (ready := readyz(service.url)).status_code == 200:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            assert time.monotonic() - failing_from >= PUBLISH_FAILING_SECONDS - 1
            assert ready.status_code == 503
            body = ready.json()
            assert body["status"] == "publishing_failed"
            assert "PublishUnavailable" in body["reason"] and "503" in body["reason"]

            # QStash's 2xx clears the failure before the publisher tracks the event, so a probe between
            # the two sees 200 at position 0: wait until both show
            deadline = time.monotonic() + 20
            while (ready := readyz(service.url)).status_code != 200 or not ready.json()["publisher_position"]:
                assert time.monotonic() < deadline, ready.json()
                time.sleep(0.2)
            assert ready.json()["publisher_position"] > 0
            assert [p.status_code for p in qstash.publishes][-1] == 201
