"""YouTube json3 captions: `events[]` with `tStartMs`, `dDurationMs` and `segs[].utf8`."""

from __future__ import annotations

import json
from typing import Any

from domain.subtitles import Cue
from infrastructure.subtitles.errors import unreadable_subtitles
from infrastructure.subtitles.text import milliseconds_to_seconds, tidy_lines


def parse_json3(text: str) -> list[Cue]:
    """One cue per event with text; window events (no `segs`) and blank `aAppend` newline events are skipped."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise unreadable_subtitles(f"json3 does not parse: {error}") from error
    events = document.get("events") if isinstance(document, dict) else None
    if not isinstance(events, list):
        raise unreadable_subtitles("json3 has no events list")
    cues = []
    for event in events:
        cue = _event_cue(event)
        if cue is not None:
            cues.append(cue)
    return cues


def _event_cue(event: Any) -> Cue | None:
    segs = event.get("segs") if isinstance(event, dict) else None
    if not segs:
        return None
    cue_text = tidy_lines("".join(str(seg.get("utf8", "")) for seg in segs if isinstance(seg, dict)))
    if not cue_text:
        return None
    try:
        start_ms = int(event.get("tStartMs", 0))
        duration_ms = int(event.get("dDurationMs", 0))
        return Cue(milliseconds_to_seconds(start_ms), milliseconds_to_seconds(start_ms + duration_ms), cue_text)
    except (TypeError, ValueError):
        return None
