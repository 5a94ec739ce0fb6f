"""TTML / IMSC / DFXP parsing with xml.etree.

Times: clock times (`HH:MM:SS.fff`, `HH:MM:SS:FF[.sub]`) and offsets (`h`, `m`, `s`, `ms`, `f`,
`t`) using `ttp:frameRate`, `ttp:frameRateMultiplier`, `ttp:subFrameRate` and `ttp:tickRate`.
`begin` of `body`, `div` and `p` add up (parallel time containers); a `p` ends at `end`, at
`begin + dur`, or else with its parent. Text: `<br/>` breaks lines, other whitespace collapses
as in XML, ruby keeps the base (`tts:ruby="text"`, `"textContainer"` and `"delimiter"` dropped),
`metadata` is ignored. Times of `span`s inside a `p` are not used: a `p` is one cue.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from fractions import Fraction

from domain.subtitles import Cue
from infrastructure.subtitles.errors import unreadable_subtitles
from infrastructure.subtitles.text import milliseconds_to_seconds
from infrastructure.subtitles.xml_tree import attribute, local_name

_CLOCK_TIME = re.compile(r"(\d+):(\d{2}):(\d{2})(?:(\.\d+)|:(\d+)(?:\.(\d+))?)?")
_OFFSET_TIME = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|f|t)")
_RUBY_DROPPED = frozenset({"text", "textContainer", "delimiter"})
_LINE_BREAK = "\u2028"
_XML_WHITESPACE = re.compile(r"[ \t\r\n]+")
# TTML writes "1000 1001"; "1000:1001" is seen in the wild (go-astisub's example).
_FRAME_RATE_MULTIPLIER = re.compile(r"(\d+)\s*[\s:]\s*(\d+)")


@dataclass(frozen=True)
class _TimeBase:
    """The document's `ttp:` timing parameters, with the defaults of TTML1."""

    frame_rate: Fraction
    sub_frame_rate: int
    tick_rate: Fraction

    @classmethod
    def of(cls, root: ET.Element) -> _TimeBase:
        """The parameters of the root; a value that does not parse is ignored (its default applies),
        as go-astisub does with `ttp:frameRateMultiplier="1:1"`, so one odd attribute fails no file."""
        frame_rate_attr = attribute(root, "frameRate")
        frame_rate = Fraction(_positive_int(frame_rate_attr) or 30)
        multiplier = _FRAME_RATE_MULTIPLIER.fullmatch((attribute(root, "frameRateMultiplier") or "").strip())
        if multiplier and int(multiplier.group(1)) and int(multiplier.group(2)):
            frame_rate *= Fraction(int(multiplier.group(1)), int(multiplier.group(2)))
        sub_frame_rate = _positive_int(attribute(root, "subFrameRate")) or 1
        tick_rate_attr = _positive_int(attribute(root, "tickRate"))
        if tick_rate_attr:
            tick_rate = Fraction(tick_rate_attr)
        else:
            tick_rate = frame_rate * sub_frame_rate if _positive_int(frame_rate_attr) else Fraction(1)
        return cls(frame_rate, sub_frame_rate, tick_rate)

    def seconds(self, expression: str) -> Fraction | None:
        """Seconds of a TTML time expression, or None when it is not one."""
        expression = expression.strip()
        clock = _CLOCK_TIME.fullmatch(expression)
        if clock:
            hours, minutes, seconds, fraction, frames, sub_frames = clock.groups()
            total = Fraction(int(hours) * 3600 + int(minutes) * 60 + int(seconds))
            if fraction:
                total += Fraction(fraction)
            if frames:
                total += (int(frames) + Fraction(int(sub_frames or 0), self.sub_frame_rate)) / self.frame_rate
            return total
        offset = _OFFSET_TIME.fullmatch(expression)
        if offset:
            value, unit = Fraction(offset.group(1)), offset.group(2)
            per_second = {"h": Fraction(1, 3600), "m": Fraction(1, 60), "s": 1, "ms": 1000}
            if unit in per_second:
                return value / per_second[unit]
            return value / (self.frame_rate if unit == "f" else self.tick_rate)
        return None


def parse_ttml(root: ET.Element) -> list[Cue]:
    """One cue per timed `<p>` with text; a `p` with a broken time expression or no end is skipped."""
    if local_name(root.tag) != "tt":
        raise unreadable_subtitles(f"not TTML: root element <{local_name(root.tag)}>")
    time_base = _TimeBase.of(root)
    _drop_whitespace_around_ruby(root)
    body = next((child for child in root if local_name(child.tag) == "body"), None)
    cues: list[Cue] = []
    if body is not None:
        _collect(body, time_base, Fraction(0), None, cues)
    return cues


def _collect(
    element: ET.Element,
    time_base: _TimeBase,
    parent_begin: Fraction,
    parent_end: Fraction | None,
    cues: list[Cue],
) -> None:
    timing = _interval(element, time_base, parent_begin, parent_end)
    if timing is None:
        return
    begin, end = timing
    if local_name(element.tag) == "p":
        text = paragraph_text(element)
        if text and end is not None and end >= begin:
            cues.append(Cue(_milliseconds(begin), _milliseconds(end), text))
        return
    for child in element:
        if local_name(child.tag) in {"div", "p"}:
            _collect(child, time_base, begin, end, cues)


def _interval(
    element: ET.Element, time_base: _TimeBase, parent_begin: Fraction, parent_end: Fraction | None
) -> tuple[Fraction, Fraction | None] | None:
    """(begin, end) in document seconds, or None when a time expression is broken."""
    begin_attr, end_attr, dur_attr = element.get("begin"), element.get("end"), element.get("dur")
    begin_offset = time_base.seconds(begin_attr) if begin_attr is not None else Fraction(0)
    if begin_offset is None:
        return None
    begin = parent_begin + begin_offset
    end = parent_end
    if end_attr is not None:
        end_offset = time_base.seconds(end_attr)
        if end_offset is None:
            return None
        end = parent_begin + end_offset
    elif dur_attr is not None:
        duration = time_base.seconds(dur_attr)
        if duration is None:
            return None
        end = begin + duration
    return begin, end


def paragraph_text(paragraph: ET.Element) -> str:
    """Plain text of a `<p>`: lines split at `<br/>`, XML whitespace collapsed, ruby annotations dropped."""
    pieces: list[str] = []
    _append_text(paragraph, pieces)
    lines = (line.strip() for line in _XML_WHITESPACE.sub(" ", "".join(pieces)).split(_LINE_BREAK))
    return "\n".join(line for line in lines if line)


def _append_text(element: ET.Element, pieces: list[str]) -> None:
    if element.text:
        pieces.append(element.text)
    for child in element:
        name = local_name(child.tag)
        if name == "br":
            pieces.append(_LINE_BREAK)
        elif name != "metadata" and attribute(child, "ruby") not in _RUBY_DROPPED:
            _append_text(child, pieces)
        if child.tail:
            pieces.append(child.tail)


def _drop_whitespace_around_ruby(root: ET.Element) -> None:
    """Remove whitespace-only text next to ruby spans: it is indentation, not a space between base characters."""
    for parent in root.iter():
        children = list(parent)
        for index, child in enumerate(children):
            if attribute(child, "ruby") is None:
                continue
            if child.tail is not None and not child.tail.strip():
                child.tail = None
            if index == 0:
                if parent.text is not None and not parent.text.strip():
                    parent.text = None
            else:
                before = children[index - 1]
                if before.tail is not None and not before.tail.strip():
                    before.tail = None


def _positive_int(value: str | None) -> int | None:
    """The whole number a parameter holds, or None when it is absent, not a number or not positive."""
    try:
        number = int(value.strip()) if value else 0
    except ValueError:
        return None
    return number if number > 0 else None


def _milliseconds(seconds: Fraction) -> float:
    return milliseconds_to_seconds(round(seconds * 1000))
