"""The command-line client against a real server: exit codes, output, downloads byte-equal to the API's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform
from tests.support.fake_streams import session_media

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def client_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    settings = platform_settings(platform, retry_base_seconds="0.2", max_video_bytes=str(8 * 1024 * 1024))
    with running_service(pg_database_one, tmp_path_factory.mktemp("client"), **settings) as running:
        yield running


def client_env(service: RunningService, key: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIATASKS_")}
    return {**env, "MEDIATASKS_URL": service.url, "MEDIATASKS_API_KEY": key, "COLUMNS": "120"}


def mediatasks(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "infrastructure.entrypoints.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        timeout=timeout,
    )


def test_submit_wait_extracted_then_downloads_equal_the_api(
    client_service: RunningService, platform: FakePlatform, tmp_path: Path
) -> None:
    _, key = client_service.new_user(20)
    env = client_env(client_service, key)
    done = mediatasks(
        env,
        "submit",
        platform.media_url("ok", size=300_000),
        "--output",
        "video_and_subtitles",
        "--lang",
        "en",
        "--wait",
        "--json",
    )
    assert done.returncode == 0, done.stderr.decode()
    task = json.loads(done.stdout)
    assert task["status"] == "extracted"
    task_id = task["task_id"]
    with client_service.client(key) as api:
        srt = api.get(f"/v1/tasks/{task_id}/subtitles", params={"format": "srt"}).content
        video = api.get(f"/v1/tasks/{task_id}/video").content
    subtitles = mediatasks(env, "subtitles", task_id, "--format", "srt")
    assert subtitles.returncode == 0 and subtitles.stdout == srt and srt

    target = tmp_path / "video.mp4"
    got = mediatasks(env, "video", task_id, "-o", str(target))
    assert got.returncode == 0, got.stderr.decode()
    assert target.read_bytes() == video and len(video) == 300_000
    target.write_bytes(video[:123_456])  # an interrupted download: resumed with Range
    resumed = mediatasks(env, "video", task_id, "-o", str(target))
    assert resumed.returncode == 0 and target.read_bytes() == video

    listed = mediatasks(env, "tasks", "list", "--json")
    assert [t["task_id"] for t in json.loads(listed.stdout)["tasks"]] == [task_id]
    shown = mediatasks(env, "tasks", "show", task_id)
    assert shown.returncode == 0 and b"status: extracted" in shown.stdout


def test_submit_output_audio_then_the_audio_download_equals_the_api(
    client_service: RunningService, platform: FakePlatform, tmp_path: Path
) -> None:
    session_media()  # the fake platform's streams, generated before the task's deadline starts
    _, key = client_service.new_user(20)
    env = client_env(client_service, key)
    done = mediatasks(
        env, "submit", platform.media_url("formats", kind="dash-h264"), "--output", "audio", "--wait", "--json"
    )
    assert done.returncode == 0, done.stderr.decode()
    task = json.loads(done.stdout)
    assert task["status"] == "extracted" and task["output_type"] == "audio", task
    task_id = task["task_id"]
    with client_service.client(key) as api:
        audio = api.get(f"/v1/tasks/{task_id}/audio").content
        assert api.get("/v1/account").json()["balance"] == 20 - task["credits_charged"]
    assert len(audio) > 1000

    target = tmp_path / "audio.m4a"
    got = mediatasks(env, "audio", task_id, "-o", str(target))
    assert got.returncode == 0, got.stderr.decode()
    assert target.read_bytes() == audio
    target.write_bytes(audio[: len(audio) // 3])  # interrupted: resumed with Range
    resumed = mediatasks(env, "audio", task_id, "-o", str(target))
    assert resumed.returncode == 0 and target.read_bytes() == audio
    first = mediatasks(env, "audio", task_id, "-o", str(tmp_path / "item0.m4a"), "--item", "0")
    assert first.returncode == 0 and (tmp_path / "item0.m4a").read_bytes() == audio, first.stderr.decode()
    missing = mediatasks(env, "audio", task_id, "-o", str(tmp_path / "other.m4a"), "--item", "5")
    assert missing.returncode == 1 and b"item_not_found" in missing.stderr, missing.stderr.decode()
    no_video = mediatasks(env, "video", task_id, "-o", str(tmp_path / "none.mp4"))
    assert no_video.returncode == 1, no_video.stderr.decode()


def test_submit_wait_failed_exits_1_with_the_error_and_the_refund(
    client_service: RunningService, platform: FakePlatform
) -> None:
    _, key = client_service.new_user(5)
    env = client_env(client_service, key)
    failed = mediatasks(env, "submit", platform.media_url("404"), "--wait")
    err = failed.stderr.decode()
    assert failed.returncode == 1, err
    assert "media_not_found" in err and "refunded 1 credits (balance 5)" in err
    task_id = json.loads(mediatasks(env, "tasks", "list", "--json").stdout)["tasks"][0]["task_id"]
    retried = mediatasks(env, "tasks", "retry", task_id, "--json")
    assert retried.returncode == 0 and json.loads(retried.stdout)["task_id"] == task_id


def test_usage_and_connection_errors_exit_2(client_service: RunningService) -> None:
    _, key = client_service.new_user(1)
    env = client_env(client_service, key)
    assert mediatasks(env, "submit").returncode == 2  # no URL
    nowhere = {**env, "MEDIATASKS_URL": "http://127.0.0.1:9"}
    refused = mediatasks(nowhere, "tasks", "list")
    assert refused.returncode == 2 and b"cannot reach the server" in refused.stderr
    unconfigured = {k: v for k, v in env.items() if k != "MEDIATASKS_API_KEY"}
    unconfigured["MEDIATASKS_CLIENT_CONFIG"] = "/nonexistent/client.toml"
    assert mediatasks(unconfigured, "tasks", "list").returncode == 2
    assert mediatasks(env, "submit", "not a url").returncode == 2  # 422 from the server
    missing = mediatasks(env, "tasks", "show", str(uuid.uuid4()))
    assert missing.returncode == 1 and b"task_not_found" in missing.stderr
    hooks = mediatasks(env, "webhooks", "create", "http://10.1.1.1/hook")
    assert hooks.returncode == 2 and b"url_not_allowed" in hooks.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_progress_bar_in_a_terminal(client_service: RunningService, platform: FakePlatform) -> None:
    _, key = client_service.new_user(5)
    env = client_env(client_service, key)
    session = f"mt{uuid.uuid4().hex[:8]}"
    command = (
        f"{sys.executable} -m infrastructure.entrypoints.cli submit '{platform.media_url('ok', size=2_000_000)}' "
        f"--output video --wait; echo exit=$?; sleep 30"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "12", "-c", str(ROOT), command],
        env=env,
        check=True,
    )
    try:
        screen = ""
        deadline = time.monotonic() + 60
        while "exit=" not in screen and time.monotonic() < deadline:
            time.sleep(0.3)
            screen = subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout
        print("captured screen:\n" + screen)
        assert "exit=0" in screen and "extracted" in screen and "100%" in screen
        assert "━" in screen  # rich's bar
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)


def test_client_reads_a_config_file(tmp_path: Path) -> None:
    from infrastructure.client.api import load_config

    config = tmp_path / "client.toml"
    config.write_text('url = "http://127.0.0.1:8000/"\napi_key = "mt_x"\n')
    loaded = load_config({"MEDIATASKS_CLIENT_CONFIG": str(config)})
    assert (loaded.url, loaded.api_key) == ("http://127.0.0.1:8000", "mt_x")
    assert load_config({"MEDIATASKS_CLIENT_CONFIG": str(config), "MEDIATASKS_URL": "http://h"}).url == "http://h"
