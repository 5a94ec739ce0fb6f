"""Cues to text in the formats the API serves: vtt, srt, txt and json."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence

from domain.subtitles import Cue

RENDER_FORMATS = ("vtt", "srt", "txt", "json")


def render_subtitles(cues: Iterable[Cue], fmt: str) -> str:
    """The cues as a `vtt`, `srt`, `txt` (text lines, consecutive duplicates dropped) or `json` document."""
    renderer = _RENDERERS.get(fmt)
    if renderer is None:
        raise ValueError(f"unknown subtitle output format {fmt!r}; expected one of {', '.join(RENDER_FORMATS)}")
    return renderer(list(cues))


def render_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT with `HH:MM:SS.mmm` timings; `&`, `<` and `>` escaped as the cue text syntax requires."""
    blocks = ["WEBVTT\n"]
    for cue in cues:
        text = cue.text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        blocks.append(f"{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{text}\n")
    return "\n".join(blocks)


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip: 1-based index, `HH:MM:SS,mmm` timings, text as is (SubRip has no escaping)."""
    return "\n".join(
        f"{index}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{cue.text}\n"
        for index, cue in enumerate(cues, start=1)
    )


def render_txt(cues: Sequence[Cue]) -> str:
    """The text lines in order, a line equal to the one before it dropped."""
    lines: list[str] = []
    for cue in cues:
        for line in cue.text.split("\n"):
            if line and (not lines or lines[-1] != line):
                lines.append(line)
    return "".join(f"{line}\n" for line in lines)


def render_json(cues: Sequence[Cue]) -> str:
    """A JSON list of {"start", "end", "text"} with times in seconds."""
    return json.dumps([{"start": cue.start, "end": cue.end, "text": cue.text} for cue in cues], ensure_ascii=False)


def _clock(seconds: float, decimal_mark: str) -> str:
    total_ms = round(seconds * 1000)
    hours, rest = divmod(total_ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole_seconds, milliseconds = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{decimal_mark}{milliseconds:03d}"


_RENDERERS: dict[str, Callable[[Sequence[Cue]], str]] = {
    "vtt": render_vtt,
    "srt": render_srt,
    "txt": render_txt,
    "json": render_json,
}
