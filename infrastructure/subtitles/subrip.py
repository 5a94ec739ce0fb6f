"""SubRip (.srt) parsing: the tolerant timing-line parser with tags and ASS overrides stripped."""

from __future__ import annotations

from domain.subtitles import Cue
from infrastructure.subtitles.cue_lines import parse_cue_lines
from infrastructure.subtitles.text import strip_markup


def parse_srt(text: str) -> list[Cue]:
    """Cues of a SubRip document; broken cues are skipped (see docs/subtitles.md)."""
    return parse_cue_lines(text, strip_markup, webvtt=False)
