"""Tolerant parser for timing-line formats (SubRip, and WebVTT files that webvtt-py rejects).

A line with "-->" starts a cue when both timestamps parse; the following lines are its text until
a blank line or the next timing line. A timing line that does not parse drops its cue (and its text);
lines outside any cue (indexes, headers, NOTE and STYLE blocks, text that lost its timing line) are
ignored. Cues that end before they start, or start before zero, are dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from domain.subtitles import Cue
from infrastructure.subtitles.text import milliseconds_to_seconds

# [[hours:]minutes:]seconds[.fraction] with "." or ","; "00:00", "02.345" and "00:00:013,567" pass,
# "0.0.0", "-0:00:04,567" and "not-a-timestamp" do not.
_TIMESTAMP = re.compile(r"(?:(?:(\d+):)?(\d+):)?(\d+)(?:[.,](\d+))?")


def parse_timestamp_ms(token: str) -> int | None:
    """Milliseconds of a loosely written timestamp, or None when it is not one."""
    match = _TIMESTAMP.fullmatch(token.strip())
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    whole = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds)
    fraction_ms = round(float(f"0.{fraction}") * 1000) if fraction else 0
    return whole * 1000 + fraction_ms


def parse_timing_line(line: str) -> tuple[int, int] | None:
    """(start, end) milliseconds of "start --> end [settings]", or None when either side is broken."""
    left, _, right = line.partition("-->")
    right_tokens = right.split()
    if not right_tokens:
        return None
    start = parse_timestamp_ms(left)
    end = parse_timestamp_ms(right_tokens[0])
    if start is None or end is None:
        return None
    return start, end


@dataclass
class _OpenCue:
    start_ms: int
    end_ms: int
    lines: list[str] = field(default_factory=list)


def parse_cue_lines(
    text: str,
    clean: Callable[[str], str],
    *,
    whitespace_ends_cue: bool,
) -> list[Cue]:
    """Cues of a timing-line document; `clean` turns raw cue lines into plain text.

    `whitespace_ends_cue` treats lines of only spaces as blank (SubRip practice); WebVTT keeps them
    inside the cue, as its spec does.
    """
    cues: list[Cue] = []
    current: _OpenCue | None = None

    def close() -> None:
        if current is None:
            return
        cue_text = clean("\n".join(current.lines))
        if not cue_text:
            return
        try:
            cues.append(
                Cue(milliseconds_to_seconds(current.start_ms), milliseconds_to_seconds(current.end_ms), cue_text)
            )
        except ValueError:
            return

    for line in text.splitlines():
        if "-->" in line:
            close()
            timing = parse_timing_line(line)
            current = _OpenCue(*timing) if timing else None
        elif not line or (whitespace_ends_cue and not line.strip()):
            close()
            current = None
        elif current is not None:
            current.lines.append(line)
    close()
    return cues
