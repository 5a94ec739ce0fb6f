"""The streaming assembler's limits, retries and DASH representation choice, over a stub fetcher (no network, no FFmpeg)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pytest
import yt_dlp
from yt_dlp.compat import compat_etree_fromstring
from yt_dlp.extractor.common import InfoExtractor

from application.format_choice import FormatChoice
from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaFormat
from infrastructure.media_formats.assembler import AssemblyLimits, StreamingMediaAssembler
from infrastructure.providers.ytdlp_provider import media_formats_from_ytdlp
from tests.unit.test_manifests import DESCRIPTIVE_IDS, REPEATING_IDS, URL

PLAYLIST = (
    "#EXTM3U\n#EXT-X-TARGETDURATION:10\n" + "".join(f"#EXTINF:10,\ns{i}.ts\n" for i in range(3)) + "#EXT-X-ENDLIST\n"
)


class StubFetcher:
    """Answers from a dict of URL → bytes or exception (an exception list is used up one per request)."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[tuple[str, int]] = []

    def get_bytes(self, url: str, *, max_bytes: int, headers: Any = None) -> bytes:
        self.requests.append((url, max_bytes))
        answer = self.answers[url]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        if isinstance(answer, Exception):
            raise answer
        if len(answer) > max_bytes:
            raise PermanentMediaError("too_large", "over")
        return answer

    def stream(self, url: str, **kwargs: Any) -> AbstractContextManager[Any]:
        raise AssertionError("no progressive file here")


def hls_choice() -> FormatChoice:
    fmt = MediaFormat("hls", "hls", "https://cdn.example/index.m3u8", vcodec="avc1", acodec="mp4a", height=360)
    return FormatChoice(fmt, fmt, "mp4")


def test_a_manifest_over_the_limit() -> None:
    fetcher = StubFetcher({"https://cdn.example/index.m3u8": PLAYLIST.encode()})
    assembler = StreamingMediaAssembler(fetcher, AssemblyLimits(max_manifest_bytes=20))
    with pytest.raises(PermanentMediaError, match="manifest_too_large"):
        assembler.assemble(hls_choice(), max_bytes=10**6).__enter__()


def test_a_stream_over_the_duration_limit() -> None:
    fetcher = StubFetcher({"https://cdn.example/index.m3u8": PLAYLIST.encode()})
    assembler = StreamingMediaAssembler(fetcher, AssemblyLimits(max_duration_seconds=25))
    with pytest.raises(PermanentMediaError, match="too_long"):
        assembler.assemble(hls_choice(), max_bytes=10**6).__enter__()


def test_segments_are_retried_then_given_up() -> None:
    unavailable = TransientMediaError("upstream_unavailable", "503")
    fetcher = StubFetcher(
        {
            "https://cdn.example/index.m3u8": PLAYLIST.encode(),
            "https://cdn.example/s0.ts": [unavailable, unavailable, b"zero"],
            "https://cdn.example/s1.ts": [unavailable],
        }
    )
    sleeps: list[float] = []
    assembler = StreamingMediaAssembler(fetcher, AssemblyLimits(segment_retries=2), sleep=sleeps.append)
    plan = assembler.plan(hls_choice().video)  # type: ignore[arg-type]
    segments = assembler.segments(plan, hls_choice().video)  # type: ignore[arg-type]
    assert next(segments) == b"zero"
    with pytest.raises(TransientMediaError) as raised:
        next(segments)
    assert raised.value.code == "segment_unavailable" and raised.value.details["last_error"] == "upstream_unavailable"
    assert sleeps == [0.2, 0.4, 0.2, 0.4]
    assert [url for url, _ in fetcher.requests].count("https://cdn.example/s1.ts") == 3


@pytest.mark.parametrize(
    ("manifest", "format_ids"),
    [
        (REPEATING_IDS, {"dash-1-0", "dash-1-1", "dash-1-2", "dash-2"}),
        (
            DESCRIPTIVE_IDS,
            {"dash-audio_eng=64000", "dash-audio_eng=128000", "dash-video=2400000", "dash-video_1080_main__high_"},
        ),
    ],
    ids=["repeating-ids", "descriptive-ids"],
)
def test_each_ytdlp_dash_format_finds_its_own_representation(manifest: str, format_ids: set[str]) -> None:
    """yt-dlp's own parse of the manifest (its format ids deduplicated and rewritten) through the provider
    mapping: every format's plan starts with the fragments yt-dlp lists for it (all of them, one period)."""
    ydl = yt_dlp.YoutubeDL({"quiet": True})
    parsed = InfoExtractor(ydl)._parse_mpd_formats(
        compat_etree_fromstring(manifest.encode()), mpd_id="dash", mpd_base_url="https://cdn.example/vod/", mpd_url=URL
    )
    info = ydl.process_ie_result({"id": "x", "title": "x", "formats": parsed, "webpage_url": URL}, download=False)
    formats = {fmt.format_id: fmt for fmt in media_formats_from_ytdlp(info)}
    assert formats.keys() == format_ids
    assembler = StreamingMediaAssembler(StubFetcher({URL: manifest.encode()}))
    for listed in info["formats"]:
        plan = assembler.plan(formats[listed["format_id"]])
        assert plan is not None and plan.init is not None
        ours = [segment.url for segment in (plan.init, *plan.segments)]
        theirs = [listed["fragment_base_url"] + fragment["path"] for fragment in listed["fragments"]]
        if "Period id=" in manifest:  # yt-dlp counts the last period's segments from the MPD's whole length
            ours, theirs = ours[:4], theirs[:4]
        assert ours == theirs, listed["format_id"]
