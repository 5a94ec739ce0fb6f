"""Format sniffing, decoding, tolerant timing lines, TTML time expressions and the errors for unreadable data."""

from __future__ import annotations

import codecs

import pytest

from application.ports.errors import PermanentMediaError
from domain.subtitles import Cue, dedupe_rolling
from infrastructure.subtitles import parse_subtitles
from infrastructure.subtitles.cue_lines import parse_timestamp_ms
from infrastructure.subtitles.decoding import decode_text

SRT = "1\n00:00:01,000 --> 00:00:02,500\nÇa va très bien, merci.\n\n2\n00:00:03,000 --> 00:00:04,000\nEl niño.\n"


@pytest.mark.parametrize(
    "data",
    [
        SRT.encode("utf-8"),
        codecs.BOM_UTF8 + SRT.encode("utf-8"),
        SRT.encode("utf-16"),
        SRT.encode("utf-16-le"),
        SRT.encode("utf-16-be"),
        SRT.encode("cp1252"),
    ],
    ids=["utf-8", "utf-8-bom", "utf-16-bom", "utf-16-le", "utf-16-be", "cp1252"],
)
def test_decoding(data: bytes) -> None:
    assert decode_text(data) == SRT
    assert parse_subtitles(data)[0] == Cue(1.0, 2.5, "Ça va très bien, merci.")


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("Привет, как дела? Всё хорошо.", "cp1251"),
        ("こんにちは、元気ですか？", "shift_jis"),
        ("Grüße aus München, schöne Größe.", "cp1252"),
        ("宇宙守護神 保護我們遠離邪惡", "big5"),
    ],
)
def test_legacy_encodings_are_detected(text: str, encoding: str) -> None:
    document = f"1\n00:00:01,000 --> 00:00:02,000\n{text}\n"
    assert decode_text(document.encode(encoding)) == document


@pytest.mark.parametrize(
    ("token", "milliseconds"),
    [
        ("00:00:01.000", 1000),
        ("01:02:03,004", 3723004),
        ("00:00", 0),
        ("02.345", 2345),
        ("00:00:013,567", 13567),
        ("00:01.5", 1500),
        ("0.0.0", None),
        ("-0:00:04,567", None),
        ("00:00:1d.890", None),
        ("not-a-timestamp", None),
        ("", None),
    ],
)
def test_tolerant_timestamps(token: str, milliseconds: int | None) -> None:
    assert parse_timestamp_ms(token) == milliseconds


def test_srt_cue_ending_before_it_starts_is_dropped() -> None:
    data = b"1\n00:00:05,000 --> 00:00:04,000\nbackwards\n\n2\n00:00:06,000 --> 00:00:07,000\nforwards\n"
    assert parse_subtitles(data, "srt") == [Cue(6.0, 7.0, "forwards")]


def test_srt_whitespace_only_line_ends_a_cue_and_html_is_stripped() -> None:
    data = b'1\r\n00:00:01,000 --> 00:00:02,000\r\n<font color="#fff"><i>hi</i></font> &amp; bye\r\n   \r\n2\r\n'
    assert parse_subtitles(data) == [Cue(1.0, 2.0, "hi & bye")]


def test_vtt_without_header_is_read_as_srt_style_timing_lines() -> None:
    assert parse_subtitles(b"00:00:01.000 --> 00:00:02.000\nhello\n") == [Cue(1.0, 2.0, "hello")]


TTML_TEMPLATE = (
    '<tt xmlns="http://www.w3.org/ns/ttml" xmlns:ttp="http://www.w3.org/ns/ttml#parameter" {params}>'
    '<body><div begin="{div_begin}">{paragraphs}</div></body></tt>'
)


@pytest.mark.parametrize(
    ("params", "begin", "end", "expected"),
    [
        ("", "1.5s", "2500ms", (1.5, 2.5)),
        ("", "00:00:01.250", "0.01h", (1.25, 36.0)),
        ('ttp:frameRate="25"', "00:00:01:05", "50f", (1.2, 2.0)),
        ('ttp:frameRate="24" ttp:frameRateMultiplier="1000 1001"', "24f", "48f", (1.001, 2.002)),
        ('ttp:tickRate="10000000"', "10000000t", "25000000t", (1.0, 2.5)),
        ('ttp:frameRate="30" ttp:subFrameRate="2"', "60t", "90t", (1.0, 1.5)),
        ("", "1m", "00:01:02", (60.0, 62.0)),
    ],
)
def test_ttml_time_expressions(params: str, begin: str, end: str, expected: tuple[float, float]) -> None:
    document = TTML_TEMPLATE.format(params=params, div_begin="0s", paragraphs=f'<p begin="{begin}" end="{end}">x</p>')
    cue = parse_subtitles(document.encode(), "ttml")[0]
    assert (cue.start, cue.end) == expected


def test_ttml_div_begin_offsets_paragraphs_and_dur_and_broken_times() -> None:
    paragraphs = (
        '<p begin="1s" dur="2s">offset</p>'
        '<p begin="soon" end="3s">broken begin</p>'
        '<p begin="1s">no end anywhere</p>'
        '<p begin="1s" end="2s"><metadata>note</metadata>a <span>b</span><br/> c</p>'
    )
    document = TTML_TEMPLATE.format(params="", div_begin="10s", paragraphs=paragraphs)
    assert parse_subtitles(document.encode()) == [Cue(11.0, 13.0, "offset"), Cue(11.0, 12.0, "a b\nc")]


def test_srv2_and_srv3_blank_append_paragraphs() -> None:
    srv2 = b'<timedtext><window id="1"/><text t="1000" d="500" w="1">one &amp;amp; two</text></timedtext>'
    assert parse_subtitles(srv2) == [Cue(1.0, 1.5, "one & two")]
    srv3 = (
        '<timedtext format="3"><body><p t="0" d="900" w="1"><s>hi</s><s t="300"> there</s></p>'
        '<p t="900" d="10" w="1" a="1">\n</p></body></timedtext>'
    ).encode()
    assert parse_subtitles(srv3) == [Cue(0.0, 0.9, "hi there")]


def test_json3_without_segs_or_text_and_missing_duration() -> None:
    data = (
        b'{"events": [{"tStartMs": 0, "dDurationMs": 9000, "id": 1},'
        b'{"tStartMs": 100, "segs": [{"utf8": "a"}, {"utf8": "\\u200b b"}]},'
        b'{"tStartMs": 200, "dDurationMs": 50, "aAppend": 1, "segs": [{"utf8": "\\n"}]}]}'
    )
    assert parse_subtitles(data, "json3") == [Cue(0.1, 0.1, "a b")]


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"just some words", None),
        (b"<html><body>nope</body></html>", None),
        (b"<tt><body>", None),
        (b'{"not": "captions"}', None),
        (b"{broken json", None),
        (b"WEBVTT\n", "ass"),
        (b'{"no events": 1}', "json3"),
        (b"[1, 2]", "json"),
    ],
)
def test_unreadable_data_is_a_permanent_unsupported_content_error(data: bytes, fmt: str | None) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        parse_subtitles(data, fmt)
    assert raised.value.code == "unsupported_content"
    assert not raised.value.retryable


def test_cue_refuses_impossible_times() -> None:
    with pytest.raises(ValueError):
        Cue(-0.1, 1.0, "x")
    with pytest.raises(ValueError):
        Cue(2.0, 1.0, "x")


def test_dedupe_rolling_drops_lines_repeated_from_the_previous_cue_only() -> None:
    cues = [
        Cue(0, 2, "hello world"),
        Cue(2, 2.01, "hello world"),
        Cue(2.01, 4, "hello world\nthis is"),
        Cue(4, 6, "new line\nhello world"),
        Cue(6, 8, "this is"),
    ]
    assert dedupe_rolling(cues) == [
        Cue(0, 2, "hello world"),
        Cue(2.01, 4, "this is"),
        Cue(4, 6, "new line"),
        Cue(6, 8, "this is"),
    ]
