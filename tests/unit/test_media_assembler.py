"""The streaming assembler's limits and retries, over a stub fetcher (no network, no FFmpeg)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import pytest

from application.format_choice import FormatChoice
from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaFormat
from infrastructure.media_formats.assembler import AssemblyLimits, StreamingMediaAssembler

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
