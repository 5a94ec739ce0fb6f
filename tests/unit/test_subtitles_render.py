"""Rendering to vtt/srt/txt/json, and render -> parse round trips over the real fixtures."""

from __future__ import annotations

import json

import pytest

from domain.subtitles import Cue
from infrastructure.subtitles import detect_format, parse_subtitles, render_subtitles
from tests.unit.test_subtitles import EXPECTED, parse_fixture

CUES = [
    Cue(0.0, 1.5, "First line"),
    Cue(3661.007, 3662.0, "Tom & Jerry <3\nsecond -> line"),
    Cue(3662.0, 3663.25, "second -> line"),
]


def test_vtt_rendering() -> None:
    assert render_subtitles(CUES[:2], "vtt") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nFirst line\n\n"
        "01:01:01.007 --> 01:01:02.000\nTom &amp; Jerry &lt;3\nsecond -&gt; line\n"
    )


def test_srt_rendering() -> None:
    assert render_subtitles(CUES[:2], "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nFirst line\n\n"
        "2\n01:01:01,007 --> 01:01:02,000\nTom & Jerry <3\nsecond -> line\n"
    )


def test_txt_rendering_drops_consecutive_duplicate_lines() -> None:
    assert render_subtitles(CUES, "txt") == "First line\nTom & Jerry <3\nsecond -> line\n"


def test_json_rendering() -> None:
    assert json.loads(render_subtitles(CUES[:1], "json")) == [{"start": 0.0, "end": 1.5, "text": "First line"}]


def test_unknown_output_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown subtitle output format"):
        render_subtitles(CUES, "ass")


def test_empty_track_renders_and_parses_back_empty() -> None:
    assert render_subtitles([], "vtt") == "WEBVTT\n"
    assert parse_subtitles(b"WEBVTT\n") == []
    assert parse_subtitles(render_subtitles([], "json").encode()) == []


@pytest.mark.parametrize("fmt", ["vtt", "json", "srt"])
def test_handmade_cues_round_trip(fmt: str) -> None:
    cues = CUES if fmt != "srt" else [cue for cue in CUES if "<" not in cue.text]
    rendered = render_subtitles(cues, fmt).encode()
    assert detect_format(rendered) == fmt
    assert parse_subtitles(rendered) == cues


@pytest.mark.parametrize("fmt", ["vtt", "srt", "json"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_cues_round_trip(name: str, fmt: str) -> None:
    cues = parse_fixture(name)
    if fmt == "srt":
        # SubRip has no escaping: text that looks like a tag would be read back as one.
        cues = [cue for cue in cues if "<" not in cue.text]
    assert parse_subtitles(render_subtitles(cues, fmt).encode(), fmt) == cues
