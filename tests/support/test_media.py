"""Test media made at test time with PyAV (FFmpeg inside its wheels): nothing is downloaded.

`build_test_media(root)` writes, once per folder, a few seconds of test pattern (FFmpeg's `testsrc2`)
and a 440 Hz tone (`sine`), encoded as H.264+AAC and as VP9+Opus, cut into:

- `dash-h264/` and `dash-vp9/`: DASH manifests (FFmpeg's dash muxer: SegmentTemplate with `$Number$`,
  fragmented MP4 segments), one video adaptation set at three heights and one audio adaptation set;
- `hls-ts-{288,360}/` (MPEG-TS segments, muxed video+audio) under a master playlist `hls-ts/master.m3u8`,
  `hls-fmp4/` (fMP4 segments with an `EXT-X-MAP` init segment) and `hls-aes/` (TS segments encrypted
  with AES-128, key `AES_KEY` at `key.bin`);
- `progressive/`: split video-only and audio-only files (`video-360.mp4`, `audio.m4a`, `video-360.webm`,
  `audio.webm`), written with their index first so a reader never has to seek.

`MediaLayout` says where each piece is and what it holds, for the fake platform and the assertions.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter

DURATION = 3.0
FPS = 24
SAMPLE_RATE = 48000
HEIGHTS = (144, 288, 360)
WIDTHS = {144: 256, 288: 512, 360: 640}
CODECS = {"h264": ("libx264", "aac"), "vp9": ("libvpx-vp9", "libopus")}
AES_KEY = bytes(range(16))
_DONE = ".complete"
_LOCK = threading.Lock()


@dataclass(frozen=True)
class MediaLayout:
    """Where the generated media are under `root`."""

    root: Path

    def dash_manifest(self, codec: str) -> Path:
        return self.root / f"dash-{codec}" / "manifest.mpd"

    def hls_master(self, segments: str = "ts") -> Path:
        return self.root / f"hls-{segments}" / "master.m3u8"

    def progressive(self, name: str) -> Path:
        return self.root / "progressive" / name


def build_test_media(root: Path) -> MediaLayout:
    """Generate every test medium under `root` unless a previous call did (thread-safe)."""
    layout = MediaLayout(root)
    with _LOCK:
        if (root / _DONE).exists():
            return layout
        root.mkdir(parents=True, exist_ok=True)
        for codec in CODECS:
            _write_dash(root / f"dash-{codec}", codec)
        for height in (288, 360):
            _write_hls(root / f"hls-ts-{height}", height, "mpegts")
        _write_hls(root / "hls-fmp4", 360, "fmp4")
        _write_hls(root / "hls-aes", 360, "mpegts", key=AES_KEY)
        _write_master(root / "hls-ts" / "master.m3u8", (288, 360))
        progressive = root / "progressive"
        progressive.mkdir(exist_ok=True)
        _write_file(progressive / "video-360.mp4", "mp4", video=("libx264", 360), audio=None)
        _write_file(progressive / "audio.m4a", "ipod", video=None, audio="aac")
        _write_file(progressive / "video-360.webm", "webm", video=("libvpx-vp9", 360), audio=None)
        _write_file(progressive / "audio.webm", "webm", video=None, audio="libopus")
        (root / _DONE).write_text("ok\n")
    return layout


def _pattern_frames(duration: float = DURATION, size: str = "640x360") -> Iterator[av.VideoFrame]:
    graph = av.filter.Graph()
    source = graph.add("testsrc2", f"size={size}:rate={FPS}:duration={duration}")
    sink = graph.add("buffersink")
    source.link_to(sink)
    graph.configure()
    while True:
        try:
            yield sink.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            return


def _tone_frames(duration: float = DURATION) -> Iterator[av.AudioFrame]:
    graph = av.filter.Graph()
    source = graph.add("sine", f"frequency=440:sample_rate={SAMPLE_RATE}:duration={duration}")
    sink = graph.add("abuffersink")
    source.link_to(sink)
    graph.configure()
    while True:
        try:
            yield sink.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            return


def _video_stream(output: av.container.OutputContainer, encoder: str, height: int) -> av.VideoStream:
    options = (
        {"x264-params": f"keyint={FPS}:min-keyint={FPS}:scenecut=0"}
        if encoder == "libx264"
        else {"deadline": "realtime", "cpu-used": "8", "g": str(FPS), "keyint_min": str(FPS)}
    )
    stream = output.add_stream(encoder, rate=FPS, options=options)
    stream.width, stream.height, stream.pix_fmt = WIDTHS[height], height, "yuv420p"
    stream.codec_context.gop_size = FPS
    stream.bit_rate = height * 1500
    return stream


def _audio_stream(output: av.container.OutputContainer, encoder: str) -> av.AudioStream:
    stream = output.add_stream(encoder, rate=SAMPLE_RATE)
    stream.layout = "stereo"
    stream.bit_rate = 96_000
    return stream


def _encode(
    output: av.container.OutputContainer, videos: list[tuple[av.VideoStream, int]], audio: av.AudioStream | None
) -> None:
    for index, frame in enumerate(_pattern_frames()):
        for stream, height in videos:
            scaled = frame.reformat(width=WIDTHS[height], height=height, format="yuv420p")
            scaled.pts, scaled.time_base = index, Fraction(1, FPS)
            output.mux(stream.encode(scaled))
    for stream, _height in videos:
        output.mux(stream.encode(None))
    if audio is not None:
        resampler = av.AudioResampler(
            format=audio.codec_context.format,
            layout="stereo",
            rate=SAMPLE_RATE,
            frame_size=audio.codec_context.frame_size or 1024,
        )
        for frame in _tone_frames():
            for resampled in resampler.resample(frame):
                output.mux(audio.encode(resampled))
        for resampled in resampler.resample(None):
            output.mux(audio.encode(resampled))
        output.mux(audio.encode(None))


def _write_dash(folder: Path, codec: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    video_encoder, audio_encoder = CODECS[codec]
    options = {
        "seg_duration": "1",
        "use_template": "1",
        "use_timeline": "0",
        "single_file": "0",
        "adaptation_sets": "id=0,streams=v id=1,streams=a",
        "dash_segment_type": "mp4",
    }
    with av.open(str(folder / "manifest.mpd"), "w", format="dash", options=options) as output:
        videos = [(_video_stream(output, video_encoder, height), height) for height in HEIGHTS]
        _encode(output, videos, _audio_stream(output, audio_encoder))


def _write_hls(folder: Path, height: int, segment_type: str, key: bytes | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    options: dict[str, str] = {}
    if key is not None:  # AES-128: FFmpeg encrypts each segment, the playlist names "key.bin"
        (folder / "key.bin").write_bytes(key)
        (folder / "key.info").write_text(f"key.bin\n{folder / 'key.bin'}\n")
        options["hls_key_info_file"] = str(folder / "key.info")
    options |= {
        "hls_time": "1",
        "hls_playlist_type": "vod",
        "hls_segment_type": segment_type,
        "hls_segment_filename": str(folder / ("segment-%03d.ts" if segment_type == "mpegts" else "segment-%03d.m4s")),
    }
    if segment_type == "fmp4":
        options["hls_fmp4_init_filename"] = "init.mp4"
    with av.open(str(folder / "index.m3u8"), "w", format="hls", options=options) as output:
        _encode(output, [(_video_stream(output, "libx264", height), height)], _audio_stream(output, "aac"))


def _write_master(path: Path, heights: tuple[int, ...]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["#EXTM3U", "#EXT-X-VERSION:3"]
    for height in heights:
        lines.append(
            f"#EXT-X-STREAM-INF:BANDWIDTH={height * 1000},RESOLUTION={WIDTHS[height]}x{height},"
            f'CODECS="avc1.64001e,mp4a.40.2"'
        )
        lines.append(f"../hls-ts-{height}/index.m3u8")
    path.write_text("\n".join(lines) + "\n")


def _write_file(path: Path, fmt: str, *, video: tuple[str, int] | None, audio: str | None) -> None:
    options = {"movflags": "faststart"} if fmt in ("mp4", "ipod") else {}
    with av.open(str(path), "w", format=fmt, options=options) as output:
        videos = [(_video_stream(output, video[0], video[1]), video[1])] if video else []
        _encode(output, videos, _audio_stream(output, audio) if audio else None)
