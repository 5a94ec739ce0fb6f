"""HLS, DASH and split formats end to end: a real server process stores them, PyAV checks what it stored.

The media are generated at test time (tests/support/test_media.py) and served by the fake platform
(tests/support/fake_streams.py), which lists them in the provider contract's `formats`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import httpx
import pytest

from tests.e2e.conftest import RunningService, platform_settings, running_service
from tests.support.fake_platform import FakePlatform
from tests.support.fake_streams import session_media

PRICES = {"video": 2, "audio": 1}


@pytest.fixture(scope="module")
def stream_service(
    pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory, platform: FakePlatform
) -> Iterator[RunningService]:
    session_media()  # generated before the first task, not inside its deadline
    settings = platform_settings(
        platform,
        retry_base_seconds="0.2",
        max_attempts="2",
        workers="2",
        download_deadline_seconds="30",
        download_read_timeout="5",
    )
    with running_service(pg_database_one, tmp_path_factory.mktemp("streams"), **settings) as running:
        yield running


@dataclass
class Done:
    task: dict[str, Any]
    balance: int
    refunds: int
    client: httpx.Client


def run(
    service: RunningService,
    platform: FakePlatform,
    kind: str,
    *,
    output_type: str = "video",
    mode: str = "formats",
    credits: int = 10,
    timeout: float = 60,
    **options: Any,
) -> Done:
    query = {key: value for key, value in options.items() if key in ("fail", "fails", "blocked", "variant", "count")}
    body = {key: value for key, value in options.items() if key not in query}
    _, key = service.new_user(credits)
    client = service.client(key)
    url = platform.media_url(mode, kind=kind, **query)
    r = client.post("/v1/tasks", json={"url": url, "output_type": output_type, **body})
    assert r.status_code == 202, r.text
    task_id = r.json()["task_id"]
    deadline = time.monotonic() + timeout
    while (task := client.get(f"/v1/tasks/{task_id}").json())["status"] not in ("extracted", "failed"):
        assert time.monotonic() < deadline, f"task stuck: {task}"
        time.sleep(0.1)
    refunds: list[dict[str, Any]] = []
    account: dict[str, Any] = {}
    while time.monotonic() < deadline:
        account = client.get("/v1/account").json()
        refunds = [e for e in account["entries"] if e["kind"] == "refund" and e["task_id"] == task_id]
        if refunds or task["status"] == "extracted":
            break
        time.sleep(0.05)
    return Done(task, account["balance"], len(refunds), client)


@dataclass
class Probe:
    streams: dict[str, str]
    height: int | None
    durations: dict[str, float]
    decoded_frame: bool


def probe(data: bytes) -> Probe:
    """Codecs, height, per-stream duration (last packet end) and whether a video frame decodes."""
    with av.open(io.BytesIO(data)) as container:
        streams = {stream.type: stream.codec_context.name for stream in container.streams}
        height = container.streams.video[0].codec_context.height if container.streams.video else None
        durations: dict[str, float] = {}
        for packet in container.demux():
            if packet.pts is not None:
                end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
                durations[packet.stream.type] = max(durations.get(packet.stream.type, 0.0), end)
    decoded = False
    if height is not None:
        with av.open(io.BytesIO(data)) as container:
            decoded = next(container.decode(video=0), None) is not None
    return Probe(streams, height, durations, decoded)


def source_duration() -> float:
    with open(session_media().progressive("video-360.mp4"), "rb") as file:
        return probe(file.read()).durations["video"]


def stored(done: Done, kind: str = "video", item: int | None = None) -> bytes:
    params = {"item": item} if item is not None else {}
    r = done.client.get(f"/v1/tasks/{done.task['task_id']}/{kind}", params=params)
    assert r.status_code == 200, r.text
    return r.content


@pytest.mark.parametrize(
    ("kind", "request_options", "codecs", "height", "container"),
    [
        ("dash-h264", {}, ("h264", "aac"), 360, "mp4"),
        ("dash-vp9", {"video_codec": "vp9"}, ("vp9", "opus"), 360, "webm"),
        ("hls-ts", {}, ("h264", "aac"), 360, "mp4"),
        ("hls-fmp4", {}, ("h264", "aac"), 360, "mp4"),
        ("hls-aes", {}, ("h264", "aac"), 360, "mp4"),
        ("split-h264", {}, ("h264", "aac"), 360, "mp4"),
        ("split-vp9", {}, ("vp9", "opus"), 360, "webm"),
        ("dash-h264", {"max_height": 288}, ("h264", "aac"), 288, "mp4"),
        ("hls-ts", {"max_height": 300}, ("h264", "aac"), 288, "mp4"),
    ],
)
def test_each_variant_is_stored_with_both_streams(
    stream_service: RunningService,
    platform: FakePlatform,
    kind: str,
    request_options: dict[str, Any],
    codecs: tuple[str, str],
    height: int,
    container: str,
) -> None:
    done = run(stream_service, platform, kind, **request_options)
    assert done.task["status"] == "extracted", done.task
    formats = done.task["result"]["formats"]
    assert formats["container"] == container and formats["video"]["height"] == height and formats["reasons"]
    media = probe(stored(done))
    assert media.streams == {"video": codecs[0], "audio": codecs[1]}
    assert media.height == height and media.decoded_frame
    for stream, duration in media.durations.items():
        assert abs(duration - source_duration()) <= 0.1, (stream, media.durations)
    assert done.balance == 10 - PRICES["video"] and done.refunds == 0


def test_mute_stores_the_video_alone(stream_service: RunningService, platform: FakePlatform) -> None:
    done = run(stream_service, platform, "hls-ts", mute=True)
    assert done.task["status"] == "extracted", done.task
    media = probe(stored(done))
    assert media.streams == {"video": "h264"} and media.decoded_frame


@pytest.mark.parametrize(
    ("audio_format", "codec", "encoded"),
    [
        ("best", "aac", None),
        ("m4a", "aac", None),
        ("mp3", "mp3float", "mp3"),
        ("opus", "opus", "opus"),
    ],
)
def test_audio_in_each_format(
    stream_service: RunningService, platform: FakePlatform, audio_format: str, codec: str, encoded: str | None
) -> None:
    done = run(stream_service, platform, "dash-h264", output_type="audio", audio_format=audio_format)
    assert done.task["status"] == "extracted", done.task
    assert done.task["result"]["formats"]["audio_encoded_to"] == encoded
    media = probe(stored(done, "audio"))
    assert media.streams == {"audio": codec}
    assert abs(media.durations["audio"] - 3.0) <= 0.15
    assert done.balance == 10 - PRICES["audio"]


def test_a_segment_that_fails_twice_is_retried(stream_service: RunningService, platform: FakePlatform) -> None:
    done = run(stream_service, platform, "dash-h264", fail="chunk-stream2-00002.m4s", fails=2)
    assert done.task["status"] == "extracted", done.task
    assert done.task["attempts"] == 1
    assert platform.count("/streams/dash-h264/chunk-stream2-00002.m4s") >= 3
    assert probe(stored(done)).streams == {"video": "h264", "audio": "aac"}


def test_a_segment_redirecting_to_a_private_address_is_refused(
    stream_service: RunningService, platform: FakePlatform
) -> None:
    done = run(stream_service, platform, "hls-ts", blocked="segment-001.ts")
    assert done.task["status"] == "failed" and done.task["error"]["code"] == "url_not_allowed", done.task
    assert done.refunds == 1 and done.balance == 10


@pytest.mark.parametrize(
    ("kind", "variant", "code"),
    [
        ("dash-h264", "live", "live_not_supported"),
        ("hls-ts", "live", "live_not_supported"),
        ("dash-h264", "drm", "drm_protected"),
        ("hls-ts", "drm", "drm_protected"),
    ],
)
def test_live_and_drm_fail_with_their_codes(
    stream_service: RunningService, platform: FakePlatform, kind: str, variant: str, code: str
) -> None:
    done = run(stream_service, platform, kind, variant=variant)
    assert done.task["status"] == "failed" and done.task["error"]["code"] == code, done.task
    assert done.refunds == 1 and done.balance == 10


def test_no_format_under_the_height_limit(stream_service: RunningService, platform: FakePlatform) -> None:
    done = run(stream_service, platform, "hls-ts", max_height=144)
    assert done.task["status"] == "failed" and done.task["error"]["code"] == "no_suitable_format", done.task
    assert done.refunds == 1
    history = done.client.get(f"/v1/tasks/{done.task['task_id']}/history").json()["events"]
    failed = [event for event in history if event["type"].endswith("Failed")][-1]
    assert failed["data"]["context"]["details"]["best_available_height"] == 288


def test_a_carousel_stores_every_item(stream_service: RunningService, platform: FakePlatform) -> None:
    done = run(stream_service, platform, "split-h264", mode="carousel", count=3)
    assert done.task["status"] == "extracted", done.task
    items = done.task["result"]["items"]
    assert len(items) == 3 and len({item["video"]["key"] for item in items}) == 3
    for index in range(3):
        assert probe(stored(done, item=index)).streams == {"video": "h264", "audio": "aac"}
    r = done.client.get(f"/v1/tasks/{done.task['task_id']}/video", params={"item": 3})
    assert r.status_code == 404 and r.json()["error"]["code"] == "item_not_found"


def test_a_segment_that_keeps_failing_exhausts_the_retries(
    stream_service: RunningService, platform: FakePlatform
) -> None:
    done = run(stream_service, platform, "hls-ts", fail="segment-002.ts", fails=1000)
    assert done.task["status"] == "failed" and done.task["error"]["code"] == "retries_exhausted", done.task
    assert done.task["attempts"] == 2 and done.refunds == 1 and done.balance == 10
