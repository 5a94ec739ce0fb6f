"""WebVTT parsing with webvtt-py, falling back to the tolerant timing-line parser."""

from __future__ import annotations

import webvtt
from webvtt.errors import MalformedCaptionError, MalformedFileError
from webvtt.models import Timestamp

from domain.subtitles import Cue
from infrastructure.subtitles.cue_lines import parse_cue_lines
from infrastructure.subtitles.text import milliseconds_to_seconds, strip_markup


def parse_vtt(text: str) -> list[Cue]:
    """Cues of a WebVTT document.

    webvtt-py parses the file when it can; when it rejects the file, or silently drops cue blocks
    (fewer captions than timing lines), the tolerant parser reads it instead and keeps every cue
    whose timing parses.
    """
    try:
        captions = webvtt.WebVTT.from_string(text).captions
    except (MalformedFileError, MalformedCaptionError):
        return _parse_tolerantly(text)
    if len(captions) < sum("-->" in line for line in text.splitlines()):
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
    return parse_cue_lines(text, strip_markup, whitespace_ends_cue=False)


def _seconds(timestamp: Timestamp) -> float:
    hours, minutes, seconds, milliseconds = timestamp.to_tuple()
    return milliseconds_to_seconds(((hours * 60 + minutes) * 60 + seconds) * 1000 + milliseconds)
