"""ElementTree helpers for the XML subtitle formats (TTML, YouTube timedtext)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring

from infrastructure.subtitles.errors import unreadable_subtitles


def parse_xml(data: bytes) -> ET.Element:
    """Root element of an XML document; expat honours the BOM and the declared encoding.

    defusedxml refuses any DTD (`<!DOCTYPE`), so no entity can be declared, expanded or fetched:
    subtitle formats never need one, and expat's own amplification limit still lets a quadratic
    blowup (one large entity referenced a million times) grow the process by hundreds of MiB.
    """
    try:
        return fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as error:
        raise unreadable_subtitles(f"subtitle XML with a DTD or entity declarations is refused: {error!r}") from error
    except ET.ParseError as error:
        raise unreadable_subtitles(f"subtitle XML does not parse: {error}") from error


def local_name(name: str) -> str:
    """Tag or attribute name without its namespace: "{http://www.w3.org/ns/ttml}p" -> "p"."""
    return name.rpartition("}")[2]


def attribute(element: ET.Element, name: str) -> str | None:
    """Value of the attribute with this local name, in any namespace."""
    for key, value in element.attrib.items():
        if local_name(key) == name:
            return value
    return None
