"""Every file in ../shared/fixtures/peer-subtitles parses as its source project's test expects, or differs
where docs/subtitles.md ("Files from other projects' test suites") says why.

Each row: the service's cue count (None: refused as `unsupported_content`), first and last cue text,
and what the source test asserts (its provenance is in peer-subtitles/README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pytest

from application.ports.errors import PermanentMediaError
from infrastructure.subtitles import parse_subtitles
from tests.support.shared_fixtures import REPO_ROOT, fixtures_dir

PEERS = fixtures_dir() / "peer-subtitles"
SUBTITLES_DOC = REPO_ROOT / "docs" / "subtitles.md"


class Peer(NamedTuple):
    count: int | None
    first: str | None
    last: str | None
    source: str
    differs: bool = False


ASTISUB_LAST = "(computer playing\nelectronic melody)"
ASTISUB_ITEMS = "assertSubtitleItems: 6 items, '(deep rumbling)' at 1:39 … '(computer playing' / 'electronic melody)'"
CUE_CONTENT = "Laughs &am& other  stuff > &l<&rl\u200f\u200e\nOh my! >"
ESCAPES = "Some text < &> < &nb\xa0 &am< \u200f&lr\u200e other stuff."

EXPECTED: dict[str, Peer] = {
    "go-astisub/broken-1-in.vtt": Peer(None, None, None, "OpenFile returns no error (and no item)", differs=True),
    "go-astisub/example-in-carriage-return.srt": Peer(
        3,
        "Did one of the last stories strike you as\nmore interesting than the other?",
        "at a busy bus stop or anywhere\nelse for that matter.",
        "TestNewScanner: 3 items, 0 s to 3.766 s first",
    ),
    "go-astisub/example-in-html-entities.srt": Peer(
        3,
        "The man in black fled across the desert,\n& the gunslinger followed.",
        "there are other < worlds than these.",
        "3 items; line 1 keeps a trailing NBSP ('desert, \\u00a0')",
        differs=True,
    ),
    "go-astisub/example-in-html-entities.vtt": Peer(
        3,
        "The man in black fled across the desert,\n& the gunslinger followed.",
        "there are other < worlds than these.",
        "3 items; line 1 keeps a trailing NBSP ('desert, \\u00a0')",
        differs=True,
    ),
    "go-astisub/example-in.srt": Peer(6, "(deep rumbling)", ASTISUB_LAST, ASTISUB_ITEMS),
    "go-astisub/example-in.ttml": Peer(
        6, "(deep rumbling)", ASTISUB_LAST, ASTISUB_ITEMS + " (frameRateMultiplier 1:1)"
    ),
    "go-astisub/example-in.vtt": Peer(6, "(deep rumbling)", ASTISUB_LAST, ASTISUB_ITEMS),
    "go-astisub/missing-sequence-in.srt": Peer(6, "(deep rumbling)", ASTISUB_LAST, ASTISUB_ITEMS),
    "media3/empty.srt": Peer(0, None, None, "parseEmpty: no cues"),
    "media3/frame_rate.xml": Peer(2, "text 1", "text 2", "frameRate: 1 s to 1.01 s, then 1001 s to 2002 s"),
    "media3/inherit_begin_from_div.xml": Peer(6, "Lara.", "bare", "the comments in the file: div times inherited"),
    "media3/simple.xml": Peer(3, "cue 1", "cue 3", "simple_allCues: 10-18 s, 20-28 s, 30-38 s"),
    "media3/typical_bad_timestamps.srt": Peer(
        2,
        "This is the first subtitle.",
        "This should be discarded (too few decimal places).",
        "parseTypicalBadTimestamps: only the first cue",
        differs=True,
    ),
    "media3/typical_extra_blank_line.srt": Peer(
        3, "This is the first subtitle.", "This is the third subtitle.", "parseTypicalExtraBlankLine: 3 cues"
    ),
    "media3/typical_no_hours_and_millis.srt": Peer(
        3,
        "This is the first subtitle.",
        "This is the third subtitle.",
        "parseTypicalNoHoursAndMillis: 3, the 2nd 2-3 s",
    ),
    "media3/typical_unexpected_end.srt": Peer(
        2,
        "This is the first subtitle.",
        "This is the second subtitle.\nSecond subtitle with second line.",
        "parseTypicalUnexpectedEnd: the first two cues",
    ),
    "media3/typical_utf16le.srt": Peer(
        3, "This is the first subtitle.", "This is the third subtitle.", "parseTypicalUtf16LittleEndian: 3 cues"
    ),
    "media3/typical_with_comments.vtt": Peer(
        2, "This is the first subtitle.", "This is the second subtitle.", "parseTypicalWithComments: 2 cues"
    ),
    "media3/with_bad_cue_header.vtt": Peer(
        2, "This is the first subtitle.", "This is the third subtitle.", "parseWithBadCueHeader: 1st and 3rd"
    ),
    "media3/with_css_styles.vtt": Peer(
        4, "This is the first subtitle.", "You are an idiot\nYou don't have the guts", "webvttWithCssStyle: 4 texts"
    ),
    "media3/with_tags.vtt": Peer(
        4, "This is the first subtitle.", "This is the <fourth> &subtitle.", "parseWithTags: 4 cues"
    ),
    "media3/with_wide_unicode_chars_and_cr_endings.vtt": Peer(
        1, "\U0001f61b\n\U0001f61b", "\U0001f61b\n\U0001f61b", "parseWithWideUnicodeCharsAndCrLineEndings"
    ),
    "pysrt/bom-utf-32-le.srt": Peer(
        7,
        "About 2 months ago I found myself on\nthe comment section of YouTube",
        "So what I thought I do is instead if answering on a YouTube comment is organize a global awareness day",
        "TestBOM.test_utf32le: 7 items",
    ),
    "pysrt/capability_tester.srt": Peer(
        37,
        "Don't show this text it may be used to insert hidden data",
        "Both line should be strikethrough but\nthe wrong closing tag should be showed",
        "test_length: 37 items",
    ),
    "pysubs2/keep_unknown_html_tags.srt": Peer(
        2, "Elephant's Little Dream", "At the left we can see...", "test_keep_unknown_html_tags (default)"
    ),
    "pysubs2/read_bad_tags.srt": Peer(
        1,
        "Elephant's Dream Is Long And Badly Nested",
        "Elephant's Dream Is Long And Badly Nested",
        "test_read_bad_tags: '< u>', '< /  i >', '</xyz>' are tags",
    ),
    "pysubs2/read_complex.vtt": Peer(
        3, "Cuidem do seu grupo.\nCuidem de suas fileiras.", "E, parem!", "test_read_complex: 3 events"
    ),
    "pysubs2/read_malformed.srt": Peer(
        2, "An example subtitle.", "Subtitle number\ntwo.", "test_read_malformed: 0-60 s and 60-120 s ('->')"
    ),
    "vtt.js/cue-times_incorrect-delimiter.vtt": Peer(0, None, None, "0 cues"),
    "vtt.js/cue-times_max-spots-over-sixty.vtt": Peer(1, "Text", "Text", "432000 s to 432000 s, 'Text'"),
    "vtt.js/cue-times_missing-spaces-between-separator.vtt": Peer(1, "Payload", "Payload", "with-data.json: 25-27 s"),
    "vtt.js/cuetext_escape-characters_together.vtt": Peer(1, ESCAPES, ESCAPES, "together-proc.json textContent"),
    "vtt.js/cuetext_languages_junk_characters.vtt": Peer(1, "Payload", "Payload", "junk id, text 'Payload'"),
    "vtt.js/cuetext_tag-format_incorrect-close-tag-order.vtt": Peer(1, "Hee! Hee!", "Hee! Hee!", "<i>Hee! Hee!</i>"),
    "vtt.js/file-layout_garbage-signature.vtt": Peer(None, None, None, "0 cues", differs=True),
    "vtt.js/file-layout_newline-before-webvtt.vtt": Peer(1, "text", "text", "no-output.json: 0 cues", differs=True),
    "vtt.js/file-layout_no-space-cue-times-cue-settings.vtt": Peer(1, "cue text", "cue text", "0-1 s 'cue text'"),
    "vtt.js/integration_cue-content.vtt": Peer(
        1, CUE_CONTENT, CUE_CONTENT, "cue-content-proc.json: a trailing space inside </i>", differs=True
    ),
    "vtt.js/integration_only-nested-cues.vtt": Peer(6, "Introduction", "Timeline Panel", "only-nested-cues.json"),
    "vtt.js/integration_regions.vtt": Peer(6, "Hi, my name is Fred", "OK, let's go.", "regions.json: 6 cues"),
    "vtt.js/integration_spec-example.vtt": Peer(
        13,
        "We are in New York City",
        "You know I'm so excited my glasses are falling off here.",
        "spec-example.json: 13 cues",
    ),
    "wpt/arrows.vtt": Peer(6, "text1", "text6", "cues.length 6"),
    "wpt/ids.vtt": Peer(5, "text1", "text5", "cues.length 5"),
    "wpt/newlines.vtt": Peer(4, "text1", "text4", "cues.length 4"),
    "wpt/nulls.vtt": Peer(7, "text1", "text7", "cues.length 7; cue 3 '\\uFFFDtext\\uFFFD3'"),
    "wpt/regions-old.vtt": Peer(2, "text1", "text2", "cues.length 2"),
    "wpt/timings-omitted-hours.vtt": Peer(3, "text1", "text3", "cues.length 3, all 0-1 s"),
    "wpt/timings-too-short.vtt": Peer(22, "text1", "text2", "cues.length 2", differs=True),
    "wpt/whitespace-chars.vtt": Peer(3, "text1", "text3", "cues.length 3; cue 1 text '   text1'", differs=True),
}


def peer_files() -> list[str]:
    return sorted(
        str(path.relative_to(PEERS)) for path in PEERS.rglob("*") if path.is_file() and path.name != "README.md"
    )


def test_every_peer_file_has_an_expectation() -> None:
    assert peer_files() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_peer_file_parses_as_expected(name: str) -> None:
    expected = EXPECTED[name]
    data = (PEERS / name).read_bytes()
    if expected.count is None:
        with pytest.raises(PermanentMediaError) as refused:
            parse_subtitles(data)
        assert refused.value.code == "unsupported_content"
        return
    cues = parse_subtitles(data)
    assert len(cues) == expected.count
    if cues:
        assert (cues[0].text, cues[-1].text) == (expected.first, expected.last)


@pytest.mark.parametrize("name", sorted(name for name, peer in EXPECTED.items() if peer.differs))
def test_each_deliberate_difference_has_a_row_in_the_docs(name: str) -> None:
    assert f"`{name}`" in Path(SUBTITLES_DOC).read_text()


def test_nul_in_cue_text_becomes_the_replacement_character() -> None:
    texts = [cue.text for cue in parse_subtitles((PEERS / "wpt/nulls.vtt").read_bytes())]
    assert texts == ["text1", "text2", "\ufffdtext\ufffd3", "text4", "text5", "text6", "text7"]
