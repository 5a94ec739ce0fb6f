"""A service killed mid-download: another one takes the task over once the lease runs out."""

from __future__ import annotations

import signal
import time

import httpx

from tests.e2e.conftest import ADMIN_TOKEN, platform_settings, start_service
from tests.support.fake_platform import FakePlatform, video_sha256
from tests.support.postgres import drop_schema


def test_killed_worker_task_is_taken_over_after_the_lease(pg_database_one: dict[str, str], tmp_path) -> None:
    with FakePlatform() as platform:
        settings = platform_settings(platform, lease_seconds="3", retry_base_seconds="0.2", workers="2")
        first, schema = start_service(pg_database_one, tmp_path, **settings)
        second = None
        try:
            user = httpx.post(
                first.url + "/v1/admin/users",
                json={"user_id": "victim", "credits": 5},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            )
            key = user.json()["api_key"]
            auth = {"Authorization": f"Bearer {key}"}
            size = 16384 * 40  # 40 pieces, 0.05 s apart: ~2 s
            url = platform.media_url("slow", size=size)
            task_id = httpx.post(
                first.url + "/v1/tasks", json={"url": url, "output_type": "video"}, headers=auth
            ).json()["task_id"]
            deadline = time.monotonic() + 20
            while httpx.get(f"{first.url}/v1/tasks/{task_id}", headers=auth).json()["progress"] < 35:
                assert time.monotonic() < deadline, "the download never started"
                time.sleep(0.05)
            first.proc.send_signal(signal.SIGKILL)  # mid-download: no Failed, no cleanup
            first.proc.wait()

            second, _ = start_service(pg_database_one, tmp_path, postgres_schema=schema, **settings)
            deadline = time.monotonic() + 40
            while (task := httpx.get(f"{second.url}/v1/tasks/{task_id}", headers=auth).json())["status"] not in (
                "extracted",
                "failed",
            ):
                assert time.monotonic() < deadline, task
                time.sleep(0.1)
            assert task["status"] == "extracted" and task["attempts"] == 2, task
            assert task["result"]["video"]["sha256"] == video_sha256(task["result"]["media"]["media_id"], size)
            history = httpx.get(f"{second.url}/v1/tasks/{task_id}/history", headers=auth).json()["events"]
            failed = [e for e in history if e["type"] == "Failed"]
            assert [f["data"]["code"] for f in failed] == ["lease_expired"]
            account = httpx.get(second.url + "/v1/account", headers=auth).json()
            assert account["balance"] == 3
            assert [e["kind"] for e in account["entries"]] == ["charge", "grant"]
        finally:
            if second is not None:
                second.stop()
            if first.proc.poll() is None:
                first.stop()
            drop_schema(pg_database_one, schema)
