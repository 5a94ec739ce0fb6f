"""Subtitle parsing (WebVTT, SubRip, YouTube json3/srv1/srv2/srv3, TTML/IMSC, our JSON) and rendering.

See docs/subtitles.md for the tolerant policy applied to malformed files.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from domain.subtitles import Cue, SubtitleKind, SubtitleTrack, dedupe_rolling
from domain.text import REPLACEMENT_CHARACTER, clean_text
from infrastructure.subtitles.cue_lines import LINE_BREAK, parse_timing_line
from infrastructure.subtitles.decoding import decode_text
from infrastructure.subtitles.errors import unreadable_subtitles
from infrastructure.subtitles.json3 import parse_json3
from infrastructure.subtitles.render import RENDER_FORMATS, render_subtitles
from infrastructure.subtitles.subrip import parse_srt
from infrastructure.subtitles.timedtext import parse_timedtext, timedtext_format
from infrastructure.subtitles.ttml import parse_ttml
from infrastructure.subtitles.vtt import parse_vtt
from infrastructure.subtitles.xml_tree import local_name, parse_xml

__all__ = [
    "PARSE_FORMATS",
    "RENDER_FORMATS",
    "dedupe_rolling",
    "detect_format",
    "parse_subtitles",
    "parse_track",
    "render_subtitles",
]

PARSE_FORMATS = ("vtt", "srt", "json3", "ttml", "srv1", "srv2", "srv3", "json")
_FORMAT_ALIASES = {"webvtt": "vtt", "subrip": "srt", "dfxp": "ttml", "imsc": "ttml", "xml": None}


def parse_subtitles(data: bytes, fmt: str | None = None) -> list[Cue]:
    """Cues of a subtitle file in `fmt` (one of PARSE_FORMATS), or of the sniffed format when `fmt` is None.

    Raises PermanentMediaError("unsupported_content") for an unknown format or unreadable data.
    An empty file (or one of only whitespace) has no cues. NUL becomes U+FFFD before parsing, as WebVTT's preprocessing says (so a NUL inside a timestamp
    breaks that cue); other control characters left in cue text become U+FFFD too (domain/text.py).
    """
    if not data.strip():
        return []
    fmt = _canonical_format(fmt) or detect_format(data)
    if fmt in {"ttml", "srv1", "srv2", "srv3"}:
        root = parse_xml(data)
        cues = parse_ttml(root) if fmt == "ttml" else parse_timedtext(root)
    else:
        cues = _TEXT_PARSERS[fmt](decode_text(data).replace("\x00", REPLACEMENT_CHARACTER))
    return [Cue(cue.start, cue.end, clean_text(cue.text)) for cue in cues]


def parse_track(data: bytes, *, lang: str, kind: SubtitleKind = "manual", fmt: str | None = None) -> SubtitleTrack:
    """A SubtitleTrack of the file; ASR tracks have rolling duplicate lines removed."""
    source_format = _canonical_format(fmt) or detect_format(data)
    cues = parse_subtitles(data, source_format)
    if kind == "asr":
        cues = dedupe_rolling(cues)
    return SubtitleTrack(lang=lang, cues=tuple(cues), source_format=source_format, kind=kind)


def detect_format(data: bytes) -> str:
    """Sniff the format from the content: WEBVTT header, JSON shape, XML root element, or SubRip timing lines."""
    text = decode_text(data).lstrip()
    if text.startswith("WEBVTT"):
        return "vtt"
    if text.startswith(("{", "[")):
        return _json_format(text)
    if text.startswith("<"):
        root = parse_xml(data)
        if local_name(root.tag) == "tt":
            return "ttml"
        flavour = timedtext_format(root)
        if flavour is not None:
            return flavour
        raise unreadable_subtitles(f"unknown subtitle XML root element <{local_name(root.tag)}>")
    if any(parse_timing_line(line) for line in LINE_BREAK.split(text)):
        return "srt"
    raise unreadable_subtitles("not a subtitle format this service reads")


def _json_format(text: str) -> str:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise unreadable_subtitles(f"subtitle JSON does not parse: {error}") from error
    if isinstance(document, dict) and "events" in document:
        return "json3"
    if isinstance(document, list):
        return "json"
    raise unreadable_subtitles("JSON is neither YouTube json3 nor a list of cues")


def _canonical_format(fmt: str | None) -> str | None:
    if fmt is None:
        return None
    name = fmt.strip().lower().lstrip(".")
    name = _FORMAT_ALIASES.get(name, name)
    if name is not None and name not in PARSE_FORMATS:
        raise unreadable_subtitles(f"unknown subtitle format {fmt!r}")
    return name


def _parse_cue_list(text: str) -> list[Cue]:
    """Cues of our own JSON rendering: a list of {"start", "end", "text"}."""
    try:
        items = json.loads(text)
        return [Cue(float(item["start"]), float(item["end"]), str(item["text"])) for item in items]
    except (json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise unreadable_subtitles(f"not a JSON list of cues: {error}") from error


_TEXT_PARSERS: dict[str, Callable[[str], list[Cue]]] = {
    "vtt": parse_vtt,
    "srt": parse_srt,
    "json3": parse_json3,
    "json": _parse_cue_list,
}
