"""Big HLS and DASH streams for bench/streaming.py, made once with PyAV and cached under data/bench-streams/.

720p test pattern (x264 `ultrafast`, a fixed high quantizer-free rate so the size follows the
duration) and an AAC tone, cut by FFmpeg's own HLS muxer (MPEG-TS, muxed) and DASH muxer (fMP4,
video and audio in separate adaptation sets), like tests/support/test_media.py at bench sizes.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from tests.support.test_media import FPS, SAMPLE_RATE, _pattern_frames, _tone_frames

WIDTH, HEIGHT = 1280, 720
#: Encoder settings that make about 2 MiB per second of video: sizes follow durations.
X264 = {"preset": "ultrafast", "x264-params": f"keyint={FPS * 2}:min-keyint={FPS * 2}:scenecut=0:qp=4"}
MIB_PER_SECOND = 2.7


def build_bench_stream(root: Path, size_mib: int) -> Path:
    """`root/<size>MiB/` with `bench-hls/` and `bench-dash/` of about `size_mib` each (cached)."""
    folder = root / f"{size_mib}MiB"
    done = folder / ".complete"
    if done.exists():
        return folder
    duration = max(4.0, size_mib / MIB_PER_SECOND)
    (folder / "bench-hls").mkdir(parents=True, exist_ok=True)
    (folder / "bench-dash").mkdir(parents=True, exist_ok=True)
    _encode(
        av.open(
            str(folder / "bench-hls" / "index.m3u8"),
            "w",
            format="hls",
            options={
                "hls_time": "4",
                "hls_playlist_type": "vod",
                "hls_segment_type": "mpegts",
                "hls_segment_filename": str(folder / "bench-hls" / "segment-%05d.ts"),
            },
        ),
        duration,
    )
    _encode(
        av.open(
            str(folder / "bench-dash" / "manifest.mpd"),
            "w",
            format="dash",
            options={
                "seg_duration": "4",
                "use_template": "1",
                "use_timeline": "0",
                "adaptation_sets": "id=0,streams=v id=1,streams=a",
            },
        ),
        duration,
    )
    done.write_text("ok\n")
    return folder


def _encode(output: av.container.OutputContainer, duration: float) -> None:
    with output:
        video = output.add_stream("libx264", rate=FPS, options=X264)
        video.width, video.height, video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        video.bit_rate = int(MIB_PER_SECOND * 8 * 1024**2)
        audio = output.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "stereo"
        audio.bit_rate = 128_000
        resampler = av.AudioResampler(
            format=audio.codec_context.format,
            layout="stereo",
            rate=SAMPLE_RATE,
            frame_size=audio.codec_context.frame_size or 1024,
        )
        tone = _tone_frames(duration)
        audio_seconds = 0.0
        for index, frame in enumerate(_pattern_frames(duration, f"{WIDTH}x{HEIGHT}")):
            frame.pts, frame.time_base = index, Fraction(1, FPS)
            output.mux(video.encode(frame))
            while audio_seconds <= index / FPS:  # interleaved, as a real stream is
                sound = next(tone, None)
                if sound is None:
                    break
                audio_seconds += sound.samples / SAMPLE_RATE
                for resampled in resampler.resample(sound):
                    output.mux(audio.encode(resampled))
        output.mux(video.encode(None))
        for sound in tone:
            for resampled in resampler.resample(sound):
                output.mux(audio.encode(resampled))
        for resampled in resampler.resample(None):
            output.mux(audio.encode(resampled))
        output.mux(audio.encode(None))
