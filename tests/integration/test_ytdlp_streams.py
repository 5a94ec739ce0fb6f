"""yt-dlp's generic extractor reads direct .mpd/.m3u8 links of the fake platform; what it lists is stored.

The provider's formats go through the chooser and the streaming assembler (SSRF-guarded fetcher,
PyAV remux), and the output is opened with PyAV: the same path the pipeline takes.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import av
import pytest

from application.format_choice import FormatRequest, choose_formats
from infrastructure.media_formats.assembler import StreamingMediaAssembler
from infrastructure.providers.ytdlp_provider import YtDlpMediaProvider, YtDlpOptions
from infrastructure.safe_http import SafeFetcher, UrlPolicy
from tests.support.fake_platform import FakePlatform
from tests.support.fake_streams import session_media


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    session_media()
    with FakePlatform() as fake:
        yield fake


@pytest.mark.parametrize(
    ("path", "request_options", "protocol", "height"),
    [
        ("dash-h264/manifest.mpd", {}, "dash", 360),
        ("dash-h264/manifest.mpd", {"max_height": 200}, "dash", 144),
        ("hls-ts/master.m3u8", {}, "hls", 360),
        ("hls-fmp4/index.m3u8", {}, "hls", 360),
    ],
)
def test_ytdlp_formats_are_stored(
    platform: FakePlatform, path: str, request_options: dict, protocol: str, height: int
) -> None:
    info = YtDlpMediaProvider(YtDlpOptions(allow_generic=True)).fetch_metadata(f"{platform.url}/streams/{path}")
    assert info.formats and {fmt.protocol for fmt in info.formats} == {protocol}
    choice = choose_formats(info.formats, FormatRequest(**request_options))
    with (
        SafeFetcher(UrlPolicy(allow_cidrs=["127.0.0.1/32"])) as fetcher,
        StreamingMediaAssembler(fetcher).assemble(choice, max_bytes=10**8) as media,
    ):
        data = b"".join(media.iter_bytes())
        assert media.bytes_fetched > 0
    with av.open(io.BytesIO(data)) as container:
        assert {stream.type for stream in container.streams} == {"video", "audio"}
        assert container.streams.video[0].codec_context.height == height
        assert next(container.decode(video=0), None) is not None
