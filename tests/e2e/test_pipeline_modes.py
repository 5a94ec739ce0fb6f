"""The whole pipeline against a local fake platform: each mode ends in the right state and balance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform, video_sha256

PRICES = {"subtitles": 1, "video": 2, "video_and_subtitles": 3}


@pytest.fixture(scope="module")
def worker_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(
        platform,
        lease_seconds="6",
        retry_base_seconds="0.2",
        max_attempts="3",
        max_video_bytes=str(5 * 1024 * 1024),
        download_deadline_seconds="20",
        download_read_timeout="5",
        workers="4",
    )
    with running_service(pg_database_one, tmp_path_factory.mktemp("pipeline"), **settings) as running:
        yield running


@dataclass
class Finished:
    task: dict
    balance: int
    refunds: int
    client: httpx.Client


def run_task(
    service: RunningService, url: str, output_type: str, *, credits: int = 10, timeout: float = 45
) -> Finished:
    _, key = service.new_user(credits)
    client = service.client(key)
    r = client.post("/v1/tasks", json={"url": url, "output_type": output_type, "languages": ["en"]})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in ("extracted", "failed"):
            break
        assert time.monotonic() < deadline, f"task stuck: {task}"
        time.sleep(0.1)
    expect_refund = task["status"] == "failed"
    while True:  # the refund lands shortly after the failure
        account = client.get("/v1/account").json()
        refunds = [e for e in account["entries"] if e["kind"] == "refund" and e["task_id"] == task_id]
        if refunds or not expect_refund or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    time.sleep(0.3 if expect_refund else 0)
    account = client.get("/v1/account").json()
    refunds = [e for e in account["entries"] if e["kind"] == "refund" and e["task_id"] == task_id]
    return Finished(client.get(f"/v1/tasks/{task_id}").json(), account["balance"], len(refunds), client)


@pytest.mark.parametrize(
    ("mode", "options", "output_type", "code", "attempts"),
    [
        ("404", {}, "video", "media_not_found", 1),
        ("401", {}, "video", "provider_auth", 1),
        ("private", {}, "video", "media_private", 1),
        ("oversize", {}, "video", "too_large", 1),
        ("endless", {}, "video", "too_large", 1),
        ("wrong-type", {}, "video", "unsupported_content", 1),
        ("video-404", {}, "video", "media_not_found", 1),
        ("redirect", {"hops": 6}, "video", "too_many_redirects", 1),
        ("redirect-blocked", {}, "video", "url_not_allowed", 1),
        ("redirect-blocked", {"to": "ipv6-loopback"}, "video", "url_not_allowed", 1),
        ("subtitles-only", {}, "video", "no_video", 1),
        ("no-subtitles", {}, "subtitles", "no_subtitles", 1),
        ("429", {"fails": 10, "retry_after": 0}, "subtitles", "retries_exhausted", 3),
        ("malformed", {}, "subtitles", "provider_bad_response", 1),
        ("deep-404", {}, "subtitles", "media_not_found", 1),
    ],
)
def test_failing_modes_fail_with_their_code_and_refund_once(
    worker_service: RunningService,
    platform: FakePlatform,
    mode: str,
    options: dict,
    output_type: str,
    code: str,
    attempts: int,
) -> None:
    done = run_task(worker_service, platform.media_url(mode, **options), output_type)
    assert done.task["status"] == "failed", done.task
    assert done.task["error"]["code"] == code
    assert done.task["error"]["terminal"] is True
    assert done.task["attempts"] == attempts
    assert done.refunds == 1
    assert done.balance == 10
    assert done.task["refunded_credits"] == PRICES[output_type]


@pytest.mark.parametrize(
    ("mode", "options", "attempts"),
    [("ok", {}, 1), ("redirect", {"hops": 3}, 1), ("flaky-503", {"fails": 2}, 3), ("video-flaky-503", {"fails": 1}, 2)],
)
def test_succeeding_modes_store_the_video_and_charge_once(
    worker_service: RunningService,
    platform: FakePlatform,
    mode: str,
    options: dict,
    attempts: int,
) -> None:
    size = 300_000
    url = platform.media_url(mode, size=size, **options)
    done = run_task(worker_service, url, "video_and_subtitles")
    assert done.task["status"] == "extracted", done.task
    assert (done.task["progress"], done.task["attempts"]) == (100, attempts)
    assert done.balance == 10 - 3 and done.refunds == 0
    media_id = done.task["result"]["media"]["media_id"]
    video = done.task["result"]["video"]
    assert video["size"] == size and video["sha256"] == video_sha256(media_id, size)
    timings = done.task["timings"]
    assert {"cache_lookup_ms", "download_ms", "download_bytes", "subtitles_ms", "total_ms"} <= set(timings)

    task_id = done.task["task_id"]
    body = done.client.get(f"/v1/tasks/{task_id}/video")
    assert body.status_code == 200 and len(body.content) == size
    part = done.client.get(f"/v1/tasks/{task_id}/video", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == body.content[100:200]
    assert part.headers["Content-Range"] == f"bytes 100-199/{size}"
    assert done.client.get(f"/v1/tasks/{task_id}/video", headers={"Range": "bytes=-10"}).content == body.content[-10:]
    assert done.client.get(f"/v1/tasks/{task_id}/video", headers={"Range": f"bytes={size}-"}).status_code == 416

    vtt = done.client.get(f"/v1/tasks/{task_id}/subtitles", params={"format": "vtt"})
    assert vtt.status_code == 200 and vtt.text.startswith("WEBVTT")
    srt = done.client.get(f"/v1/tasks/{task_id}/subtitles", params={"lang": "en", "format": "srt"})
    assert srt.status_code == 200 and "-->" in srt.text and "," in srt.text.splitlines()[1]
    cues = done.client.get(f"/v1/tasks/{task_id}/subtitles", params={"format": "json"}).json()
    assert cues and {"start", "end", "text"} <= set(cues[0])
    txt = done.client.get(f"/v1/tasks/{task_id}/subtitles", params={"format": "txt"}).text
    assert cues[0]["text"].splitlines()[0] in txt
    missing = done.client.get(f"/v1/tasks/{task_id}/subtitles", params={"lang": "fr"})
    assert missing.status_code == 404 and missing.json()["error"]["details"] == {"available": ["en"]}


def test_subtitles_only_media_gives_subtitles(worker_service: RunningService, platform: FakePlatform) -> None:
    done = run_task(worker_service, platform.media_url("subtitles-only"), "subtitles")
    assert done.task["status"] == "extracted", done.task
    assert done.balance == 9
    assert "video" not in done.task["result"]
    r = done.client.get(f"/v1/tasks/{done.task['task_id']}/video")
    assert r.status_code == 404 and r.json()["error"]["code"] == "no_video"


def test_metadata_cache_hit_on_second_task(worker_service: RunningService, platform: FakePlatform) -> None:
    url = platform.media_url("ok", size=10_000)
    first = run_task(worker_service, url, "subtitles")
    second = run_task(worker_service, url, "subtitles")
    assert first.task["status"] == second.task["status"] == "extracted"
    assert "provider_ms" in first.task["timings"] and "provider_ms" not in second.task["timings"]
    history = second.client.get(f"/v1/tasks/{second.task['task_id']}/history").json()["events"]
    metadata = next(e for e in history if e["type"] == "Processing" and e["data"]["stage"] == "metadata")
    assert metadata["data"]["details"]["cache"] == "hit"


def test_slow_download_reports_progress_and_keeps_its_lease(
    worker_service: RunningService, platform: FakePlatform
) -> None:
    """A download longer than the lease (6 s) completes in one attempt: progress events are heartbeats."""
    import json

    from tests.support.sse import read_sse

    size = 16384 * 160  # 160 pieces, 0.05 s apart: ~8 s
    _, key = worker_service.new_user(10)
    with worker_service.client(key) as c:
        task_id = c.post(
            "/v1/tasks", json={"url": platform.media_url("slow", size=size), "output_type": "video"}
        ).json()["task_id"]
        with c.stream("GET", f"/v1/tasks/{task_id}/events", headers={"Last-Event-ID": "0"}, timeout=60) as r:
            updates = [json.loads(m.data) for m in read_sse(r) if m.event == "status"]
        task = c.get(f"/v1/tasks/{task_id}").json()
    assert task["status"] == "extracted" and task["attempts"] == 1, task
    assert task["timings"]["download_ms"] > 6000
    progress = [u["progress"] for u in updates]
    assert progress == sorted(progress)
    video_steps = {p for p in progress if 30 < p < 70}
    assert len(video_steps) >= 4, progress
    assert progress[-1] == 100
