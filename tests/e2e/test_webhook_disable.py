"""An endpoint failing for longer than the disable window is disabled, and its owner is told why."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from standardwebhooks.webhooks import Webhook

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform
from tests.support.webhook_receiver import WebhookReceiver

SCHEDULE = "0,1,1,1,1,1,1,1"  # about 7 s of attempts: longer than the window below
DISABLE_AFTER = "2"  # seconds (MEDIATASKS_WEBHOOK_DISABLE_AFTER_SECONDS; 5 days by default)


@pytest.fixture(scope="module")
def disabling_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(
        platform,
        webhook_retry_schedule=SCHEDULE,
        webhook_disable_after_seconds=DISABLE_AFTER,
        webhook_timeout_seconds="3",
    )
    with running_service(pg_database_one, tmp_path_factory.mktemp("disable"), **settings) as running:
        yield running


def test_an_endpoint_failing_past_the_window_is_disabled_with_its_reason(
    disabling_service: RunningService, platform: FakePlatform
) -> None:
    _, key = disabling_service.new_user(3)
    failing, healthy = WebhookReceiver(status=500).start(), WebhookReceiver().start()
    try:
        with disabling_service.client(key) as c:
            endpoints = {}
            for name, receiver in (("failing", failing), ("healthy", healthy)):
                r = c.post("/v1/webhooks", json={"url": receiver.url, "event_types": ["task.failed"]})
                assert r.status_code == 201, r.text
                receiver.webhook = Webhook(r.json()["secret"])
                endpoints[name] = r.json()["id"]
            assert (
                c.post("/v1/tasks", json={"url": platform.media_url("404"), "output_type": "subtitles"}).status_code
                == 202
            )

            deadline = time.monotonic() + 40
            while (endpoint := c.get(f"/v1/webhooks/{endpoints['failing']}").json())["enabled"]:
                assert time.monotonic() < deadline, endpoint
                time.sleep(0.2)
            assert endpoint["disabled_reason"].startswith("every delivery failed since "), endpoint
            assert endpoint["failing_since"] is not None
            listed = {w["id"]: w for w in c.get("/v1/webhooks").json()["webhooks"]}
            assert listed[endpoints["failing"]]["disabled_reason"] == endpoint["disabled_reason"]

            [delivery] = c.get(f"/v1/webhooks/{endpoints['failing']}/deliveries").json()["deliveries"]
            assert delivery["status"] == "failed" and delivery["next_attempt_at"] is None, delivery
            assert len(delivery["attempts"]) >= 2 and {a["status_code"] for a in delivery["attempts"]} == {500}
            assert len(delivery["attempts"]) < len(SCHEDULE.split(","))  # stopped by the window, not the schedule
            attempts = len(failing.arrivals)
            refused = c.post(f"/v1/webhooks/{endpoints['failing']}/deliveries/{delivery['id']}/redeliver")
            assert refused.status_code == 409, refused.text
            assert refused.json()["error"]["code"] == "webhook_disabled"
            assert refused.json()["error"]["details"]["disabled_reason"] == endpoint["disabled_reason"]

            other = c.get(f"/v1/webhooks/{endpoints['healthy']}").json()
            assert other["enabled"] is True and other["disabled_reason"] is None and other["failing_since"] is None
            assert len(healthy.processed) == 1
            time.sleep(1.5)  # nothing more is sent to the disabled endpoint
            assert len(failing.arrivals) == attempts
    finally:
        failing.stop()
        healthy.stop()
