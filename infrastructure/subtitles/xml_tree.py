"""ElementTree helpers for the XML subtitle formats (TTML, YouTube timedtext)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from infrastructure.subtitles.errors import unreadable_subtitles


def parse_xml(data: bytes) -> ET.Element:
    """Root element of an XML document; expat honours the BOM and the declared encoding.

    ElementTree does not fetch external entities, and the bundled expat (2.4.1+) refuses
    entity-expansion bombs.
    """
    try:
        return ET.fromstring(data)
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
