"""Hostile input over the real server: a NUL grant, a hostile provider, an XML entity bomb (issue 14's data path)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import HOSTILE_LANGUAGES, FakePlatform
from tests.support.shared_fixtures import fixtures_dir

BOMB = "quadratic_blowup.ttml"
REAL_TTML = "ttml_w3c_example.pysubs2.ttml"
MIB = 1024 * 1024


def quadratic_blowup_ttml(entity_bytes: int = MIB, references: int = 800_000) -> bytes:
    """One 1 MiB entity referenced 800,000 times: 3.3 MiB on the wire (under MAX_SUBTITLE_BYTES), ~800 GB expanded."""
    return (
        '<?xml version="1.0"?>\n<!DOCTYPE tt [<!ENTITY a "' + "a" * entity_bytes + '">]>\n'
        '<tt xmlns="http://www.w3.org/ns/ttml"><body><div><p begin="0s" end="1s">'
        + "&a;" * references
        + "</p></div></body></tt>\n"
    ).encode()


@pytest.fixture(scope="module")
def hostile_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePlatform]:
    folder = tmp_path_factory.mktemp("hostile-subtitles")
    (folder / BOMB).write_bytes(quadratic_blowup_ttml())
    shutil.copy(fixtures_dir() / "subtitles" / REAL_TTML, folder / REAL_TTML)
    with FakePlatform(subtitle_fixtures=folder) as fake:
        yield fake


@pytest.fixture(scope="module")
def worker_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, hostile_platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(hostile_platform, retry_base_seconds="0.2", max_attempts="2", workers="2")
    with running_service(pg_database_one, tmp_path_factory.mktemp("hostile"), **settings) as running:
        yield running


def finished(client: httpx.Client, task_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        task = client.get(f"/v1/tasks/{task_id}").json()
        if task["status"] in ("extracted", "failed"):
            return task
        assert time.monotonic() < deadline, f"task stuck: {task}"
        time.sleep(0.1)


def submit(
    service: RunningService, url: str, output_type: str = "subtitles", languages: list[str] | None = None
) -> tuple[httpx.Client, dict]:
    _, key = service.new_user(10)
    client = service.client(key)
    r = client.post("/v1/tasks", json={"url": url, "output_type": output_type, "languages": languages or []})
    assert r.status_code == 202, r.text
    return client, finished(client, r.json()["task_id"])


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in KiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def test_a_nul_grant_is_refused_and_the_read_model_keeps_advancing(worker_service: RunningService) -> None:
    user_id, key = worker_service.new_user(5)
    grant = f"{worker_service.url}/v1/admin/users/{user_id}/credits"
    refused = httpx.post(grant, json={"amount": 1, "reason": "nul\u0000reason"}, headers=worker_service.admin)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_text"
    accepted = httpx.post(grant, json={"amount": 2, "reason": "after\tthe refusal"}, headers=worker_service.admin)
    assert accepted.status_code == 200, accepted.text
    client = worker_service.client(key)
    deadline = time.monotonic() + 20
    while (account := client.get("/v1/account").json())["balance"] != 7:
        assert time.monotonic() < deadline, account
        time.sleep(0.1)
    assert [e["reason"] for e in account["entries"] if e["kind"] == "grant"][0] == "after\tthe refusal"


def test_a_hostile_provider_gives_a_clean_extracted_task(
    worker_service: RunningService, hostile_platform: FakePlatform
) -> None:
    url = hostile_platform.media_url("hostile-text")
    media_id = url.split("/video/")[1].split("?")[0]
    client, task = submit(worker_service, url, "video_and_subtitles")
    assert task["status"] == "extracted", task
    assert task["title"] == "Fake\ufffdtitle\ufffdwith\ufffdcontrols"
    assert task["result"]["media"]["uploader"] == "up\ufffdloader"
    assert [track["lang"] for track in task["result"]["subtitles"]] == ["en"]
    assert all(lang not in str(task) for lang in HOSTILE_LANGUAGES)
    assert "subtitle tracks skipped" in worker_service.process.log_path.read_text(errors="replace")
    video_requests = [r for r in hostile_platform.requests if r.path == f"/media/{media_id}.mp4"]
    assert video_requests, "the video was not downloaded"
    sent = {name.lower(): value for name, value in video_requests[-1].headers.items()}
    assert sent["user-agent"] == "fake-cdn-check"
    assert sent["host"].startswith("127.0.0.1:")
    assert "cookie" not in sent and "referer" not in sent and "x-injected" not in sent
    # The read model kept following: a later task of another user is projected too.
    _, later = submit(worker_service, hostile_platform.media_url("ok"))
    assert later["status"] == "extracted", later


def test_a_provider_404_nested_100000_deep_is_not_found_without_retries(
    worker_service: RunningService, hostile_platform: FakePlatform
) -> None:
    url = hostile_platform.media_url("deep-404")
    _, task = submit(worker_service, url)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "media_not_found"
    assert task["attempts"] == 1


def test_the_quadratic_blowup_ttml_is_refused_and_memory_stays_flat(
    worker_service: RunningService, hostile_platform: FakePlatform
) -> None:
    pid = worker_service.process.proc.pid
    _, warm = submit(worker_service, hostile_platform.media_url("subtitles-only", subtitle=REAL_TTML))
    assert warm["status"] == "extracted", warm
    before = memory_kib(pid)
    _, task = submit(worker_service, hostile_platform.media_url("subtitles-only", subtitle=BOMB))
    after = memory_kib(pid)
    assert task["status"] == "failed", task
    assert task["error"]["code"] == "unsupported_content"
    assert task["attempts"] == 1
    grown_mib = (after["VmHWM"] - before["VmHWM"]) / 1024
    print(
        f"quadratic-blowup TTML: VmHWM {before['VmHWM'] // 1024} -> {after['VmHWM'] // 1024} MiB "
        f"(+{grown_mib:.1f}), VmRSS {before['VmRSS'] // 1024} -> {after['VmRSS'] // 1024} MiB"
    )
    assert grown_mib < 32
