"""The fake platform's streaming formats: HLS, DASH and split files made by tests/support/test_media.py.

`/streams/<path>` serves the generated files. Query options, carried from the media URL:
- `fail=<file name>` and `fails=N`: that file answers 503 to its first N requests (default 2);
- `blocked=<file name>`: that file redirects to a private address (10.0.0.1);
- `variant=live`: manifests read as live (HLS without `EXT-X-ENDLIST`, MPD `type="dynamic"`);
- `variant=drm`: manifests announce DRM (HLS `SAMPLE-AES` key, MPD `ContentProtection`).

`formats_json(kind, ...)` is the provider contract's `formats` list for a kind of media:
`dash-h264`, `dash-vp9`, `hls-ts`, `hls-fmp4`, `hls-aes`, `split-h264`, `split-vp9`.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from xml.sax.saxutils import escape as xml_escape

from tests.support.test_media import CODECS, HEIGHTS, WIDTHS, MediaLayout, build_test_media

KINDS = ("dash-h264", "dash-vp9", "hls-ts", "hls-fmp4", "hls-aes", "split-h264", "split-vp9")
CONTENT_TYPES = {
    ".mpd": "application/dash+xml",
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".bin": "application/octet-stream",
    ".mp4": "video/mp4",
    ".m4a": "audio/mp4",
    ".webm": "video/webm",
}
_CODEC_STRINGS = {"h264": ("avc1.64001e", "mp4a.40.2"), "vp9": ("vp09.00.30.08", "opus")}
#: The media URL's options that stream URLs carry (`media` keeps the failure counters of two media apart).
CARRIED = ("fail", "fails", "blocked", "variant", "media")
_LOCK = threading.Lock()
_ROOT: list[Path] = []
_SERVE_ONLY: list[Path] = []


def session_media() -> MediaLayout:
    """The generated media of this test process (made on first use in a temporary folder, removed at exit)."""
    with _LOCK:
        if not _ROOT:
            root = Path(tempfile.mkdtemp(prefix="mediatasks-test-media-"))
            atexit.register(shutil.rmtree, root, True)
            _ROOT.append(root)
    return build_test_media(_ROOT[0])


def serve_from(root: Path) -> None:
    """Serve `/streams/` from `root` instead of the generated test media (bench/streaming.py's big streams)."""
    with _LOCK:
        _ROOT[:] = [root]
        _SERVE_ONLY.append(root)


def _streams_root() -> Path:
    with _LOCK:
        if _SERVE_ONLY:
            return _SERVE_ONLY[-1]
    return session_media().root


def formats_json(kind: str, base_url: str, options: dict[str, str]) -> list[dict[str, Any]]:
    """The contract's `formats` for `kind`, every URL under `{base_url}/streams/` with the options' query."""
    query = "?" + urlencode({k: v for k, v in options.items() if k in CARRIED})
    streams = f"{base_url}/streams"
    if kind.startswith("dash-"):
        codec = kind.removeprefix("dash-")
        video_codec, audio_codec = _CODEC_STRINGS[codec]
        manifest = f"{streams}/dash-{codec}/manifest.mpd{query}"
        formats = [
            {
                "format_id": f"dash-{codec}-{height}",
                "protocol": "dash",
                "url": manifest,
                "ext": "mp4",
                "vcodec": video_codec,
                "acodec": None,
                "width": WIDTHS[height],
                "height": height,
                "fps": 24,
                "bitrate": height * 1.5,
                "stream_id": str(index),
            }
            for index, height in enumerate(HEIGHTS)
        ]
        formats.append(
            {
                "format_id": f"dash-{codec}-audio",
                "protocol": "dash",
                "url": manifest,
                "ext": "m4a",
                "vcodec": None,
                "acodec": audio_codec,
                "bitrate": 96,
                "stream_id": str(len(HEIGHTS)),
            }
        )
        return formats
    if kind == "hls-ts":
        return [
            {
                "format_id": f"hls-{height}",
                "protocol": "hls",
                "url": f"{streams}/hls-ts-{height}/index.m3u8{query}",
                "ext": "mp4",
                "vcodec": "avc1.64001e",
                "acodec": "mp4a.40.2",
                "width": WIDTHS[height],
                "height": height,
                "bitrate": height * 1.5,
            }
            for height in (288, 360)
        ]
    if kind in ("hls-fmp4", "hls-aes"):
        return [
            {
                "format_id": f"{kind}-360",
                "protocol": "hls",
                "url": f"{streams}/{kind}/index.m3u8{query}",
                "ext": "mp4",
                "vcodec": "avc1.64001e",
                "acodec": "mp4a.40.2",
                "width": 640,
                "height": 360,
            }
        ]
    if kind == "bench-hls":
        return [
            {
                "format_id": "hls-720",
                "protocol": "hls",
                "url": f"{streams}/bench-hls/index.m3u8{query}",
                "ext": "mp4",
                "vcodec": "avc1.64001f",
                "acodec": "mp4a.40.2",
                "width": 1280,
                "height": 720,
            }
        ]
    if kind == "bench-dash":
        manifest = f"{streams}/bench-dash/manifest.mpd{query}"
        return [
            {
                "format_id": "dash-720",
                "protocol": "dash",
                "url": manifest,
                "vcodec": "avc1.64001f",
                "acodec": None,
                "width": 1280,
                "height": 720,
                "stream_id": "0",
            },
            {
                "format_id": "dash-audio",
                "protocol": "dash",
                "url": manifest,
                "vcodec": None,
                "acodec": "mp4a.40.2",
                "stream_id": "1",
            },
        ]
    if kind.startswith("split-"):
        codec = kind.removeprefix("split-")
        video_codec, audio_codec = _CODEC_STRINGS[codec]
        ext, audio_name = ("mp4", "audio.m4a") if codec == "h264" else ("webm", "audio.webm")
        return [
            {
                "format_id": f"{codec}-360-video",
                "protocol": "https",
                "url": f"{streams}/progressive/video-360.{ext}{query}",
                "ext": ext,
                "vcodec": video_codec,
                "acodec": None,
                "width": 640,
                "height": 360,
                "bitrate": 540,
            },
            {
                "format_id": f"{codec}-audio",
                "protocol": "https",
                "url": f"{streams}/progressive/{audio_name}{query}",
                "ext": audio_name.rsplit(".", 1)[1],
                "vcodec": None,
                "acodec": audio_codec,
                "bitrate": 96,
            },
        ]
    raise ValueError(f"unknown stream kind {kind!r}; known: {KINDS}")


def stream_response(path: str, query: dict[str, str], attempt: int) -> tuple[int, bytes, str, dict[str, str]]:
    """(status, body, content type, headers) for `/streams/<path>`; `attempt` counts requests of this path."""
    layout = MediaLayout(_streams_root())
    name = path.rsplit("/", 1)[-1]
    if query.get("blocked") == name:
        return 302, b"", "text/plain", {"Location": "http://10.0.0.1/segment.ts"}
    if query.get("fail") == name and attempt <= int(query.get("fails", "2")):
        return 503, b'{"error": {"code": "unavailable"}}', "application/json", {}
    file = (layout.root / path).resolve()
    if layout.root.resolve() not in file.parents or not file.is_file():
        return 404, b'{"error": {"code": "not_found"}}', "application/json", {}
    body = file.read_bytes()
    suffix = file.suffix
    if suffix in (".m3u8", ".mpd"):
        body = _variant(body.decode(), suffix, query.get("variant"), query).encode()
    return 200, body, CONTENT_TYPES.get(suffix, "application/octet-stream"), {}


def _variant(text: str, suffix: str, variant: str | None, query: dict[str, str]) -> str:
    carried = urlencode({k: v for k, v in query.items() if k in CARRIED})
    if suffix == ".m3u8":
        lines = []
        for line in text.splitlines():
            if variant == "live" and line.startswith(("#EXT-X-ENDLIST", "#EXT-X-PLAYLIST-TYPE")):
                continue
            if line and not line.startswith("#") and carried:
                line = f"{line}?{carried}"
            lines.append(line)
            if variant == "drm" and line.startswith("#EXT-X-TARGETDURATION"):
                lines.append('#EXT-X-KEY:METHOD=SAMPLE-AES,URI="skd://key",KEYFORMAT="com.apple.streamingkeydelivery"')
        return "\n".join(lines) + "\n"
    if carried:
        text = text.replace('.m4s"', f'.m4s?{xml_escape(carried)}"')
    if variant == "live":
        text = text.replace('type="static"', 'type="dynamic"')
    if variant == "drm":
        text = text.replace(
            '<Representation id="0"',
            '<ContentProtection schemeIdUri="urn:uuid:edef8ba9-79d6-4ace-a3c8-27dcd51d21ed"/><Representation id="0"',
            1,
        )
    return text


__all__ = ["CODECS", "KINDS", "formats_json", "session_media", "stream_response"]
