"""YouTube timedtext XML: srv1 (`<transcript><text start dur>`), srv2 (`<text t d>`) and srv3 (`<p t d><s>`)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

from domain.subtitles import Cue
from infrastructure.subtitles.errors import unreadable_subtitles
from infrastructure.subtitles.text import milliseconds_to_seconds, strip_markup, tidy_lines
from infrastructure.subtitles.xml_tree import local_name


def timedtext_format(root: ET.Element) -> str | None:
    """ "srv1", "srv2" or "srv3" for a timedtext root element, None for other XML."""
    name = local_name(root.tag)
    if name == "transcript":
        return "srv1"
    if name == "timedtext":
        return "srv3" if root.get("format") == "3" else "srv2"
    return None


def parse_srv1(root: ET.Element) -> list[Cue]:
    """srv1 times are seconds; the text is HTML escaped once more inside the XML (`&lt;i>`), so tags are stripped."""
    return _cues(
        (
            _seconds_to_ms(element.get("start")),
            _seconds_to_ms(element.get("dur", "0")),
            strip_markup(element.text or ""),
        )
        for element in root.iter()
        if local_name(element.tag) == "text"
    )


def parse_srv2(root: ET.Element) -> list[Cue]:
    """srv2 `<text t d>` times are milliseconds; the text is treated like srv1's."""
    return _cues(
        (_int_ms(element.get("t")), _int_ms(element.get("d", "0")), strip_markup(element.text or ""))
        for element in root.iter()
        if local_name(element.tag) == "text"
    )


def parse_srv3(root: ET.Element) -> list[Cue]:
    """srv3 `<p t d>` times are milliseconds; the text is all of the paragraph's `<s>` segments, U+200B removed."""
    return _cues(
        (_int_ms(element.get("t")), _int_ms(element.get("d", "0")), tidy_lines("".join(element.itertext())))
        for element in root.iter()
        if local_name(element.tag) == "p"
    )


def parse_timedtext(root: ET.Element) -> list[Cue]:
    """Cues of any timedtext flavour."""
    flavour = timedtext_format(root)
    if flavour is None:
        raise unreadable_subtitles(f"not YouTube timedtext XML: <{local_name(root.tag)}>")
    return _PARSERS[flavour](root)


def _cues(items: Iterable[tuple[int | None, int | None, str]]) -> list[Cue]:
    """Cues of (start ms, duration ms, text); untimed and blank items are skipped."""
    cues = []
    for start_ms, duration_ms, text in items:
        if start_ms is None or duration_ms is None or not text:
            continue
        try:
            cues.append(Cue(milliseconds_to_seconds(start_ms), milliseconds_to_seconds(start_ms + duration_ms), text))
        except ValueError:
            continue
    return cues


def _seconds_to_ms(value: str | None) -> int | None:
    try:
        return round(float(value) * 1000) if value is not None else None
    except (ValueError, OverflowError):
        return None


def _int_ms(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


_PARSERS: dict[str, Callable[[ET.Element], list[Cue]]] = {"srv1": parse_srv1, "srv2": parse_srv2, "srv3": parse_srv3}
