"""Remuxing (and, for audio formats that need it, encoding) with PyAV, from byte iterators to byte iterators.

FFmpeg never opens a URL or a file here: each input is a Python file-like object that pulls bytes
from an iterator (the SSRF-guarded fetcher's segments), and the output is written into a bounded
buffer that the caller drains chunk by chunk into the blob store. MP4 is written fragmented
(`empty_moov`), Matroska/WebM and Ogg are written without seeking back, so nothing is held beyond
a few packets and one output chunk.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import av.bitstream
import av.container

from application.ports.errors import PermanentMediaError

OUTPUT_CHUNK = 1024 * 1024
#: FFmpeg muxer names and options per output container (all written without seeking).
MUXERS: dict[str, tuple[str, dict[str, str]]] = {
    "mp4": ("mp4", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}),
    "m4a": ("ipod", {"movflags": "frag_keyframe+empty_moov+default_base_moof"}),
    "webm": ("webm", {}),
    "mkv": ("matroska", {}),
    "ogg": ("ogg", {}),
    "mp3": ("mp3", {}),
}
#: The encoder for each audio codec this module may have to produce.
AUDIO_ENCODERS = {"aac": "aac", "mp3": "libmp3lame", "opus": "libopus"}


class ChunkReader:
    """A read-only, non-seekable file over an iterator of byte chunks (what PyAV reads an input from)."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return b""
        if size < 0 or size >= len(self._pending):
            piece, self._pending = self._pending, memoryview(b"")
        else:
            piece, self._pending = self._pending[:size], self._pending[size:]
        return bytes(piece)


class ChunkSink:
    """A write-only, non-seekable file collecting what the muxer writes until the caller takes it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def write(self, data: Any) -> int:
        self._parts.append(bytes(data))
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        return None

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts, self.size = [], 0
        return data


@dataclass(frozen=True)
class RemuxInput:
    """One input: its bytes, and which of its streams to take."""

    chunks: Iterable[bytes]
    video: bool = False
    audio: bool = False
    format_hint: str | None = None


@dataclass(frozen=True)
class OutputPlan:
    """The output container and, when the audio must be encoded, the codec to encode it to."""

    container: str
    audio_encoder: str | None = None


def remux(inputs: list[RemuxInput], plan: OutputPlan) -> Iterator[bytes]:
    """The output container's bytes, in chunks of about OUTPUT_CHUNK, as the inputs are read."""
    muxer, options = MUXERS[plan.container]
    sink = ChunkSink()
    opened: list[av.container.InputContainer] = []
    try:
        sources = []
        for spec in inputs:
            container = _open_input(spec)
            opened.append(container)
            sources.append((container, spec))
        output = av.open(sink, mode="w", format=muxer, options=options)
        try:
            tracks = _tracks(sources, output, plan)
            if not tracks:
                raise PermanentMediaError("no_suitable_format", "The chosen formats hold no stream to store.")
            for packet, track in _interleaved(tracks):
                track.write(output, packet)
                if sink.size >= OUTPUT_CHUNK:
                    yield sink.take()
            for track in tracks:
                track.finish(output)
        finally:
            output.close()
        if sink.size:
            yield sink.take()
    except av.error.FFmpegError as error:
        raise PermanentMediaError("unsupported_content", f"The media could not be remuxed: {error}") from error
    finally:
        for container in opened:
            container.close()


def _open_input(spec: RemuxInput) -> av.container.InputContainer:
    try:
        return av.open(ChunkReader(spec.chunks), mode="r", format=spec.format_hint, options={"fflags": "+genpts"})
    except av.error.FFmpegError as error:
        raise PermanentMediaError("unsupported_content", f"The media cannot be read: {error}") from error


class _Track:
    """One input stream copied (or encoded) into one output stream."""

    def __init__(self, source: av.stream.Stream, output: av.container.OutputContainer, encoder: str | None) -> None:
        self.source = source
        self.encoder = encoder
        self.adts_to_asc: av.bitstream.BitStreamFilterContext | None = None
        if encoder is None:
            self.target = output.add_stream_from_template(source)
            self.resampler = None
            if (
                source.codec_context.name == "aac"
                and "mpegts" in source.container.format.name
                and output.format.name in ("mp4", "ipod")
            ):
                self.adts_to_asc = av.bitstream.BitStreamFilterContext("aac_adtstoasc", source, self.target)
            self.target.codec_context.codec_tag = "\0\0\0\0"  # the output container picks its own tag
        else:
            self.target = output.add_stream(encoder, rate=source.codec_context.sample_rate or 48000)
            self.target.layout = "stereo"
            self.resampler = None

    def write(self, output: av.container.OutputContainer, packet: av.Packet) -> None:
        if self.encoder is None:
            for filtered in self.adts_to_asc.filter(packet) if self.adts_to_asc else (packet,):
                filtered.stream = self.target
                output.mux(filtered)
            return
        for frame in packet.decode():
            self._encode(output, frame)

    def _encode(self, output: av.container.OutputContainer, frame: av.AudioFrame | None) -> None:
        context = self.target.codec_context
        if self.resampler is None:
            self.resampler = av.AudioResampler(
                format=context.format, layout="stereo", rate=context.sample_rate, frame_size=context.frame_size or None
            )
        for resampled in self.resampler.resample(frame):
            output.mux(self.target.encode(resampled))

    def finish(self, output: av.container.OutputContainer) -> None:
        if self.encoder is None:
            return
        for frame in self.source.codec_context.decode(None) if self.source.codec_context.is_open else ():
            self._encode(output, frame)
        if self.resampler is not None:
            self._encode(output, None)
        output.mux(self.target.encode(None))


def _tracks(
    sources: list[tuple[av.container.InputContainer, RemuxInput]],
    output: av.container.OutputContainer,
    plan: OutputPlan,
) -> list[_Track]:
    tracks = []
    for container, spec in sources:
        if spec.video and container.streams.video:
            tracks.append(_Track(container.streams.video[0], output, None))
        if spec.audio and container.streams.audio:
            tracks.append(_Track(container.streams.audio[0], output, plan.audio_encoder))
    return tracks


def _interleaved(tracks: list[_Track]) -> Iterator[tuple[av.Packet, _Track]]:
    """Every packet of every track, by decoding timestamp in seconds across tracks (what the muxer wants)."""
    by_container: dict[int, list[_Track]] = {}
    for track in tracks:
        by_container.setdefault(id(track.source.container), []).append(track)
    streams = []
    for group in by_container.values():
        container = group[0].source.container
        owners = {track.source.index: track for track in group}
        streams.append((container.demux(*[track.source for track in group]), owners))
    heap: list[tuple[Fraction, int, av.Packet, _Track]] = []
    order = 0

    def advance(index: int) -> None:
        nonlocal order
        demuxer, owners = streams[index]
        for packet in demuxer:
            if packet.dts is None and packet.size == 0:
                continue
            track = owners[packet.stream.index]
            at = Fraction(packet.dts or 0) * (packet.time_base or Fraction(1, 1))
            order += 1
            heapq.heappush(heap, (at, order, packet, track, index))  # type: ignore[arg-type]
            return

    for index in range(len(streams)):
        advance(index)
    while heap:
        _at, _order, packet, track, index = heapq.heappop(heap)  # type: ignore[misc]
        yield packet, track
        advance(index)
