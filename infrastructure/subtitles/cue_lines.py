"""Tolerant parser for timing-line formats (SubRip, and WebVTT files webvtt-py cannot be trusted with).

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
# "0.0.0", "-0:00:04,567", "not-a-timestamp" and a fraction of four digits or more do not.
_TIMESTAMP = re.compile(r"(?:(?:(\d+):)?(\d+):)?(\d+)(?:[.,](\d{1,3}))?")
# A timestamp as WebVTT writes it, which may be followed by cue settings without a space
# ("00:01.000line:40%", "00:00:01.000\ufffdalign:end" once a NUL is replaced).
_WEBVTT_TIMESTAMP = re.compile(r"(?:\d+:)?\d{2}:\d{2}\.\d{3}(?!\d)")
# WebVTT whitespace is space, tab and form feed on a line; a vertical tab is not whitespace there.
_WEBVTT_SPACE = " \t\f"
_WEBVTT_SPACE_RUN = re.compile(r"[ \t\f]+")
# SubRip files written by hand use "->" for the arrow; accepted only between timestamps with a colon.
#: Line breaks of subtitle files: LF, CRLF and CR only (str.splitlines also breaks at VT, FF, NEL, U+2028...).
LINE_BREAK = re.compile(r"\r\n|\r|\n")
_SHORT_ARROW = re.compile(r"^\s*(\d+:[\d:.,]+)\s*->\s*(\d+:[\d:.,]+)(?:\s.*)?$")


def parse_timestamp_ms(token: str) -> int | None:
    """Milliseconds of a loosely written timestamp, or None when it is not one."""
    match = _TIMESTAMP.fullmatch(token.strip())
    if match is None:
        return None
    hours, minutes, seconds, fraction = match.groups()
    whole = int(hours or 0) * 3600 + int(minutes or 0) * 60 + int(seconds)
    fraction_ms = round(float(f"0.{fraction}") * 1000) if fraction else 0
    return whole * 1000 + fraction_ms


def parse_timing_line(line: str, *, webvtt: bool = False) -> tuple[int, int] | None:
    """(start, end) milliseconds of "start --> end [settings]", or None when either side is broken.

    `webvtt`: only space, tab and form feed count as whitespace, and the end timestamp may run into
    the settings. Otherwise (SubRip) "start -> end" is read too.
    """
    if "-->" not in line:
        short = None if webvtt else _SHORT_ARROW.match(line)
        if short is None:
            return None
        start, end = parse_timestamp_ms(short.group(1)), parse_timestamp_ms(short.group(2))
        return (start, end) if start is not None and end is not None else None
    left, _, right = line.partition("-->")
    if webvtt:
        if any(space in left + right for space in "\v\r\n"):
            return None
        start = parse_timestamp_ms(left.strip(_WEBVTT_SPACE))
        right_tokens = _WEBVTT_SPACE_RUN.split(right.strip(_WEBVTT_SPACE))
        end = parse_timestamp_ms(right_tokens[0]) if right_tokens[0] else None
        if end is None:
            glued = _WEBVTT_TIMESTAMP.match(right_tokens[0])
            end = parse_timestamp_ms(glued.group()) if glued else None
    else:
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
    webvtt: bool,
) -> list[Cue]:
    """Cues of a timing-line document; `clean` turns raw cue lines into plain text.

    `webvtt` reads timing lines as WebVTT does (see parse_timing_line) and keeps lines of only spaces
    inside the cue, as its spec does; SubRip treats them as blank.
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

    for line in LINE_BREAK.split(text):
        timing = parse_timing_line(line, webvtt=webvtt)
        if "-->" in line or timing is not None:
            close()
            current = _OpenCue(*timing) if timing else None
        elif not line or (not webvtt and not line.strip()):
            close()
            current = None
        elif current is not None:
            current.lines.append(line)
    close()
    return cues
