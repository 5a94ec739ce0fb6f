"""WebVTT parsing with webvtt-py, falling back to the tolerant timing-line parser."""

from __future__ import annotations

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.models import Timestamp

from domain.subtitles import Cue
from infrastructure.subtitles.cue_lines import LINE_BREAK, parse_cue_lines, parse_timing_line
from infrastructure.subtitles.text import milliseconds_to_seconds, strip_markup


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT document.

    webvtt-py parses the file when every timing line is one WebVTT accepts; when one is not (webvtt-py
    reads a vertical tab as a space, the spec does not), when webvtt-py rejects the file, or when it
    silently drops cue blocks (fewer captions than timing lines), the tolerant parser reads it instead
    and keeps every cue whose timing parses.
    """
    timing_lines = [line for line in LINE_BREAK.split(text) if "-->" in line]
    if not all(parse_timing_line(line, webvtt=True) for line in timing_lines):
        return _parse_tolerantly(text)
    try:
        captions = webvtt.WebVTT.from_string(text).captions
    except (MalformedFileError, MalformedCaptionError):
        return _parse_tolerantly(text)
    if len(captions) < len(timing_lines):
        return _parse_tolerantly(text)
    cues = []
    for caption in captions:
        cue_text = strip_markup(caption.raw_text)
        if not cue_text:
            continue
        try:
            cues.append(Cue(_seconds(caption.start_time), _seconds(caption.end_time), cue_text))
        except ValueError:
            continue
    return cues


def _parse_tolerantly(text: str) -> list[Cue]:
    return parse_cue_lines(text, strip_markup, webvtt=True)


def _seconds(timestamp: Timestamp) -> float:
    hours, minutes, seconds, milliseconds = timestamp.to_tuple()
    return milliseconds_to_seconds(((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds)
