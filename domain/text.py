"""Free text at the edges: what is refused from users, and what is replaced in text from providers and files.

Users may send tab, line feed and carriage return; any other C0 control character, DEL, or a lone UTF-16
surrogate in their text is refused (`check_free_text`). Text from providers and subtitle files is kept,
with those characters replaced by U+FFFD, as WebVTT does with NUL (`clean_text`, `clean_json`).
PostgreSQL accepts neither NUL in `text` nor `\\u0000` in `jsonb`, and nothing encodes a lone surrogate
as UTF-8, so text cleaned this way is always storable.
"""

from __future__ import annotations

import math
import re
from typing import Any

from domain.errors import InvalidText

REPLACEMENT_CHARACTER = "\ufffd"
# C0 controls except tab, LF and CR; DEL; lone surrogates (a JSON "\ud800" decodes to one).
_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def has_unsafe_characters(text: str) -> bool:
    """True when `text` holds a character `check_free_text` refuses."""
    return _UNSAFE.search(text) is not None


def check_free_text(text: str, *, field: str) -> str:
    """`text` as is, or InvalidText naming the field and the first offending character's position."""
    found = _UNSAFE.search(text)
    if found is not None:
        raise InvalidText(
            f"{field} may not contain control characters other than tab and line breaks "
            f"(U+{ord(found.group()):04X} at position {found.start()}).",
            field=field,
            position=found.start(),
        )
    return text


def clean_text(text: str) -> str:
    """`text` with every character `check_free_text` refuses replaced by U+FFFD."""
    if text.isprintable():  # no control character and no surrogate (neither is printable): nothing to replace
        return text
    return _UNSAFE.sub(REPLACEMENT_CHARACTER, text)


def clean_json(value: Any) -> Any:
    """A JSON value with every string (keys too) cleaned and non-finite floats (NaN, ±inf) made null."""
    kind = type(value)  # the common exact types first (a read-model fold calls this per event)
    if kind is str:
        return clean_text(value)
    if kind is int or value is None:
        return value
    if kind is dict:
        cleaned = {}
        for key, item in value.items():
            if type(key) is not str or not key.isprintable():
                key = clean_text(str(key))
            item_kind = type(item)
            if item_kind is str:
                if not item.isprintable():
                    item = clean_text(item)
            elif item_kind is int or item_kind is bool or item is None:
                pass
            elif isinstance(item, str):  # a str enum (a status): what clean_text gives, without the calls
                if not item.isprintable():
                    item = clean_text(item)
            else:
                item = clean_json(item)
            cleaned[key] = item
        return cleaned
    if kind is list:
        return [
            (item if item.isprintable() else clean_text(item)) if type(item) is str else clean_json(item)
            for item in value
        ]
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {clean_text(str(key)): clean_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_json(item) for item in value]
    return value
