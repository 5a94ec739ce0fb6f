"""Every subtitle fixture parsed: formats sniffed, cue counts and first/last texts as docs/subtitles.md promises."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from domain.subtitles import Cue
from infrastructure.subtitles import dedupe_rolling, detect_format, parse_subtitles, parse_track


def subtitle_fixtures_dir() -> Path:
    """The shared real-world subtitle fixtures: $MEDIATASKS_FIXTURES_DIR, else ../shared/fixtures beside the repo."""
    root = os.environ.get("MEDIATASKS_FIXTURES_DIR")
    base = Path(root) if root else Path(__file__).resolve().parents[2].parent / "shared" / "fixtures"
    return base / "subtitles"


FIXTURES = subtitle_fixtures_dir()


class Expected(NamedTuple):
    fmt: str
    count: int
    first: str
    last: str


RUBY_DEFAULT = "Default(ルビ) \\ytruby2(ルビ) \\ytruby8(ルビ) [\\r/ルビ]"
ESCAPES_LINE = "\"“”„'‘’‚»«()[].,;:|?¿!¡<>&"

EXPECTED = {
    "bom.webvtt-py.vtt": Expected("vtt", 4, "Caption text #1", "Caption text #4"),
    "invalid_timeframe.webvtt-py.vtt": Expected("vtt", 6, "Caption text #1", "Caption text #7"),
    "mixed_identifiers.webvtt-py.vtt": Expected("vtt", 6, "Caption text #1", "Caption text #6"),
    "netflix_cue_settings_large.webvtt-py.vtt": Expected("vtt", 865, "[Alba] En 1928,", "Alba."),
    "netflix_cue_settings_large_crlf.derived.vtt": Expected("vtt", 865, "[Alba] En 1928,", "Alba."),
    "note_comments_identifiers.webvtt-py.vtt": Expected(
        "vtt", 3, "- Ta en kopp varmt te.\n- Det är inte varmt.", "- Ta en kopp"
    ),
    "style_blocks.webvtt-py.vtt": Expected("vtt", 1, "- Hello world.", "- Hello world."),
    "webvtt_with_bom.exoplayer.vtt": Expected("vtt", 2, "This is the first subtitle.", "This is the second subtitle."),
    "webvtt_with_positioning.exoplayer.vtt": Expected(
        "vtt", 8, "This is the first subtitle.", "This is the eighth subtitle."
    ),
    "webvtt_with_rubies.exoplayer.vtt": Expected("vtt", 4, "Some text with over-ruby.", "Some text with no ruby text."),
    "webvtt_typical_with_bad_timestamps.exoplayer.vtt": Expected(
        "vtt", 2, "This is the first subtitle.", "This is the second subtitle."
    ),
    "yt_autogen_rolling.webvtt-py.vtt": Expected("vtt", 4, "yeah", "this will happen is I'm telling"),
    "chinese_gb2312.srt-tools.srt": Expected("srt", 3, "宇宙守护神  保护我们远离邪恶", "轻轻一跳就能飞跃高楼"),
    "subrip_typical_with_byte_order_mark.exoplayer.srt": Expected(
        "srt", 3, "This is the first subtitle.", "This is the third subtitle."
    ),
    "subrip_typical_missing_timecode.exoplayer.srt": Expected(
        "srt", 2, "This is the first subtitle.", "This is the third subtitle."
    ),
    "subrip_typical_with_tags.exoplayer.srt": Expected("srt", 14, "This is the first subtitle.", "This is a line."),
    "subrip_typical_with_tags_crlf.derived.srt": Expected("srt", 14, "This is the first subtitle.", "This is a line."),
    "subrip_typical_negative_timestamps.exoplayer.srt": Expected(
        "srt", 1, "This is the third subtitle.", "This is the third subtitle."
    ),
    "yt_json3_manual.y2bcaptions.json3": Expected(
        "json3", 151, "Hi, I'm Vanessa from SpeakEnglishWithVanessa.com.", "Goodbye."
    ),
    "yt_json3_asr_large.y2bcaptions.json3": Expected(
        "json3", 1053, "in the comments all right oh good I", "much thanks everybody yes goodbye"
    ),
    "yt_timedtext_srv1.transcript-api.xml": Expected(
        "srv1", 3, "Hey, this is just a test", "just something shorter, I made up for testing"
    ),
    "yt_srv3_ruby_japanese.ytsubconverter.srv3.xml": Expected("srv3", 5, "No [ru/ル][by/ビ]", RUBY_DEFAULT),
    "ttml_ruby.ytsubconverter.xml": Expected("ttml", 5, "漢字", "<漢><字>"),
    "netflix_japanese_imsc_ttml.exoplayer.xml": Expected(
        "ttml",
        142,
        "NETFLIX Japanese Timed Text Style and Creation Guide Examples (playback version)",
        f"{ESCAPES_LINE}\n{ESCAPES_LINE}",
    ),
    "ttml_w3c_example.pysubs2.ttml": Expected("ttml", 11, "It seems a paradox, does it not,", "How truly delightful!"),
    "ttml_framerate_regions.pysubs2.ttml": Expected("ttml", 10, "TOP SAMPLE TEXT", "into the Pacific Ocean."),
}


def read_fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse_fixture(name: str) -> list[Cue]:
    return parse_subtitles(read_fixture(name))


def test_every_subtitle_fixture_has_an_expectation() -> None:
    assert FIXTURES.is_dir(), f"subtitle fixtures not found at {FIXTURES}; set MEDIATASKS_FIXTURES_DIR"
    assert sorted(path.name for path in FIXTURES.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_parses_to_expected_cues(name: str) -> None:
    expected = EXPECTED[name]
    data = read_fixture(name)

    assert detect_format(data) == expected.fmt
    sniffed = parse_subtitles(data)
    assert parse_subtitles(data, expected.fmt) == sniffed
    assert (len(sniffed), sniffed[0].text, sniffed[-1].text) == (expected.count, expected.first, expected.last)
    assert all(cue.text and cue.text == cue.text.strip() and 0 <= cue.start <= cue.end for cue in sniffed)


@pytest.mark.parametrize(
    ("crlf", "lf"),
    [
        ("netflix_cue_settings_large_crlf.derived.vtt", "netflix_cue_settings_large.webvtt-py.vtt"),
        ("subrip_typical_with_tags_crlf.derived.srt", "subrip_typical_with_tags.exoplayer.srt"),
    ],
)
def test_crlf_twin_parses_to_the_same_cues(crlf: str, lf: str) -> None:
    assert parse_fixture(crlf) == parse_fixture(lf)


def test_webvtt_timings_and_settings_are_not_text() -> None:
    cues = parse_fixture("netflix_cue_settings_large.webvtt-py.vtt")
    assert cues[0] == Cue(7.96, 9.48, "[Alba] En 1928,")
    assert cues[1].text == "las mujeres éramos\nalgo así como adornos"


def test_webvtt_with_bad_timestamps_keeps_the_loose_ones_and_drops_the_broken() -> None:
    cues = parse_fixture("webvtt_typical_with_bad_timestamps.exoplayer.vtt")
    assert cues == [
        Cue(0.0, 1.234, "This is the first subtitle."),
        Cue(2.345, 3.456, "This is the second subtitle."),
    ]


def test_webvtt_invalid_timeframe_drops_only_that_cue() -> None:
    texts = [cue.text for cue in parse_fixture("invalid_timeframe.webvtt-py.vtt")]
    assert "Caption text #2" not in texts
    assert texts == [f"Caption text #{number}" for number in (1, 3, 4, 5, 6, 7)]


def test_webvtt_ruby_keeps_base_text_only() -> None:
    texts = [cue.text for cue in parse_fixture("webvtt_with_rubies.exoplayer.vtt")]
    assert texts[1] == "Some text with under-ruby and over-ruby (default)."
    assert texts[2] == "base1base2base3."


def test_subrip_missing_timecode_keeps_the_two_valid_cues() -> None:
    cues = parse_fixture("subrip_typical_missing_timecode.exoplayer.srt")
    assert cues == [
        Cue(0.0, 1.234, "This is the first subtitle."),
        Cue(7204.567, 7208.901, "This is the third subtitle."),
    ]


def test_subrip_tags_and_three_digit_seconds() -> None:
    cues = parse_fixture("subrip_typical_with_tags.exoplayer.srt")
    assert cues[1].text == "This is the second subtitle.\nSecond subtitle with second line."
    assert cues[2].text == "This is the third subtitle."
    assert cues[3].text == "This { \\an2} is not a valid tag due to the space after the opening bracket."
    assert cues[4] == Cue(13.567, 14.901, "This is the fifth subtitle with multiple valid tags.")


def test_json3_manual_keeps_newlines_inside_a_segment() -> None:
    cues = parse_fixture("yt_json3_manual.y2bcaptions.json3")
    assert cues[0] == Cue(0.21, 4.04, "Hi, I'm Vanessa from SpeakEnglishWithVanessa.com.")
    assert cues[1].text == "Today, I have some good news and some bad\nnews."


def test_json3_asr_is_parsed_fast() -> None:
    data = read_fixture("yt_json3_asr_large.y2bcaptions.json3")
    started = time.perf_counter()
    cues = parse_subtitles(data)
    assert time.perf_counter() - started < 0.5
    assert cues[0] == Cue(0.0, 5.13, "in the comments all right oh good I")
    assert all("\n" not in cue.text for cue in cues)


def test_srv1_strips_escaped_html() -> None:
    cues = parse_fixture("yt_timedtext_srv1.transcript-api.xml")
    assert cues[1] == Cue(1.54, 5.7, "this is not the original transcript")


def test_srv3_removes_zero_width_spaces() -> None:
    cues = parse_fixture("yt_srv3_ruby_japanese.ytsubconverter.srv3.xml")
    assert cues[0] == Cue(0.001, 4.989, "No [ru/ル][by/ビ]")
    assert all("\u200b" not in cue.text for cue in cues)


def test_ttml_ruby_keeps_base_without_indentation() -> None:
    texts = [cue.text for cue in parse_fixture("ttml_ruby.ytsubconverter.xml")]
    assert texts == ["漢字", "漢字", "漢字", "漢", "<漢><字>"]


def test_ttml_ticks_line_breaks_and_entities() -> None:
    cues = parse_fixture("netflix_japanese_imsc_ttml.exoplayer.xml")
    assert cues[0].start == 10.0 and cues[0].end == 12.0
    assert cues[1].text == "NETFLIXタイムテキストスタ\nイルガイド用例"
    assert cues[-1].start == 118.0


def test_ttml_clock_times_and_collapsed_whitespace() -> None:
    w3c = parse_fixture("ttml_w3c_example.pysubs2.ttml")
    assert w3c[1] == Cue(5.0, 10.0, "that the image formed on\nthe Retina should be inverted?")
    regions = parse_fixture("ttml_framerate_regions.pysubs2.ttml")
    assert regions[0] == Cue(1.375, 5.75, "TOP SAMPLE TEXT")
    assert regions[5].text == "- Did he tell you what it was about?\n- He did"


def test_rolling_autocaptions_are_deduplicated_to_three_lines() -> None:
    cues = dedupe_rolling(parse_fixture("yt_autogen_rolling.webvtt-py.vtt"))
    assert [cue.text for cue in cues] == ["yeah", "what", "this will happen is I'm telling"]
    assert cues[1] == Cue(286.47, 304.08, "what")


def test_asr_track_is_deduplicated_and_manual_track_is_not() -> None:
    data = read_fixture("yt_autogen_rolling.webvtt-py.vtt")
    asr = parse_track(data, lang="en", kind="asr")
    manual = parse_track(data, lang="en")
    assert (asr.kind, asr.source_format, len(asr.cues)) == ("asr", "vtt", 3)
    assert (manual.kind, len(manual.cues)) == ("manual", 4)
