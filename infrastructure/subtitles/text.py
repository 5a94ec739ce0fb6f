"""Cue text cleanup shared by the parsers: inline markup, entities, blank and padded lines."""

from __future__ import annotations

import html
import re

# <rt>/<rp> hold ruby annotations and fallback parentheses: the base text is what we keep.
_RUBY_ANNOTATION = re.compile(r"<(rt|rp)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
# ASS/SSA override blocks such as {\an8} or {\ tag}; "{ \an2}" (space first) is plain text.
_ASS_OVERRIDE = re.compile(r" ?\{\\[^}]*\}")
# Tags (<i>, </c>, <c.colorE5E5E5>, <v Roger>, <font ...>, also written "< u>" or "< /  i >" as pysubs2
# reads them) and WebVTT timestamp tags (<00:05:04.199>). "2<3,5>1" is text: no letter after "<".
_TAG = re.compile(r"<\s*/?\s*[A-Za-z][^<>]*>|<\d+(?::\d+)+[.,]\d+>")
_INVISIBLE = str.maketrans("", "", "\u200b\ufeff")


def tidy_lines(text: str) -> str:
    """Drop zero-width spaces, strip each line, drop blank lines, join with newlines."""
    lines = (line.strip() for line in text.translate(_INVISIBLE).splitlines())
    return "\n".join(line for line in lines if line)


def strip_markup(text: str) -> str:
    """Plain text of a WebVTT/SubRip/HTML-ish cue: ruby annotations, tags and ASS overrides gone, entities decoded."""
    text = _RUBY_ANNOTATION.sub("", text)
    text = _ASS_OVERRIDE.sub("", text)
    text = _TAG.sub("", text)
    return tidy_lines(html.unescape(text))


def milliseconds_to_seconds(milliseconds: int) -> float:
    """Seconds for a whole number of milliseconds, the precision every parser keeps."""
    return milliseconds / 1000
