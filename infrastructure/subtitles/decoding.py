"""Bytes to text for subtitle files: byte-order marks, UTF-8, BOM-less UTF-16, then charset detection."""

from __future__ import annotations

import codecs
import re

from charset_normalizer import from_bytes

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# Legacy encodings subtitle files are written in. Restricting detection to these keeps
# charset-normalizer from picking exotic code pages (mac_latin2 and the like) for short files.
# cp1250 is left out: on short Western European text it wins over cp1252 and garbles accents.
SINGLE_BYTE_ENCODINGS = ("cp1252", "cp1251", "cp1253", "cp1254", "cp1255", "cp1256", "cp874", "koi8_r")
MULTI_BYTE_ENCODINGS = ("gb18030", "big5", "shift_jis", "euc_jp", "euc_kr")
_ASCII_LETTER = re.compile(rb"[A-Za-z]")


def decode_text(data: bytes) -> str:
    """Decode subtitle bytes: a BOM wins, then strict UTF-8, UTF-16 without BOM, then the detected legacy encoding."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    utf16 = _bomless_utf16(data)
    if utf16 is not None:
        return data.decode(utf16, errors="replace")
    candidates = SINGLE_BYTE_ENCODINGS if _mostly_ascii_letters(data) else SINGLE_BYTE_ENCODINGS + MULTI_BYTE_ENCODINGS
    best = from_bytes(data, cp_isolation=list(candidates)).best()
    if best is not None:
        return str(best)
    return data.decode("cp1252", errors="replace")


def _bomless_utf16(data: bytes) -> str | None:
    """Guess UTF-16 without a BOM from NUL bytes in the high half of mostly-ASCII text."""
    sample = data[:4096]
    if len(sample) < 4:
        return None
    even_nuls = sample[0::2].count(0)
    odd_nuls = sample[1::2].count(0)
    half = len(sample) // 2
    if odd_nuls > half * 0.6 and even_nuls < half * 0.1:
        return "utf-16-le"
    if even_nuls > half * 0.6 and odd_nuls < half * 0.1:
        return "utf-16-be"
    return None


def _mostly_ascii_letters(data: bytes) -> bool:
    """True when non-ASCII bytes are under a third of the letters, as accents are in Western European text.

    Chinese, Japanese and Korean text is almost all multi-byte characters, so such a file is not in
    a multi-byte encoding, though detection on a short file may say it is (a few accents in cp1252
    also form valid Big5 or GB18030 pairs).
    """
    non_ascii = len(data.translate(None, bytes(range(0x80))))
    letters = len(_ASCII_LETTER.findall(data))
    return non_ascii * 3 < non_ascii + letters
