"""HLS playlists (parsed by `m3u8`) and DASH manifests (parsed with `defusedxml`) turned into segment lists.

A `SegmentPlan` is everything the fetcher needs for one stream: the URLs (with byte ranges) of its
init segment and media segments, in order, and the total duration. Live streams and DRM are refused
here, before any segment is fetched: `live_not_supported`, `drm_protected`.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from dataclasses import dataclass, field

import defusedxml.ElementTree as SafeElementTree
import m3u8

from application.ports.errors import PermanentMediaError

_NS = "{urn:mpeg:dash:schema:mpd:2011}"
_TEMPLATE_FIELD = re.compile(r"\$(RepresentationID|Number|Time|Bandwidth)(?:%0(\d+)d)?\$")
_DURATION = re.compile(r"P(?:(\d+(?:\.\d+)?)D)?(?:T(?:(\d+(?:\.\d+)?)H)?(?:(\d+(?:\.\d+)?)M)?(?:(\d+(?:\.\d+)?)S)?)?")
MAX_SEGMENTS = 100_000


@dataclass(frozen=True)
class Segment:
    """One request: a URL and, for byte-range addressing, the inclusive range."""

    url: str
    byte_range: tuple[int, int] | None = None
    key_url: str | None = None
    key_iv: bytes | None = None
    sequence: int = 0

    def headers(self) -> dict[str, str]:
        return {"Range": f"bytes={self.byte_range[0]}-{self.byte_range[1]}"} if self.byte_range else {}


@dataclass(frozen=True)
class SegmentPlan:
    """One stream's init segment (if any) and media segments, with its duration in seconds."""

    segments: tuple[Segment, ...]
    init: Segment | None = None
    duration: float | None = None
    format_hint: str | None = None


@dataclass(frozen=True)
class Variant:
    """A stream a manifest offers (an HLS variant or a DASH representation)."""

    stream_id: str
    url: str
    vcodec: str | None
    acodec: str | None
    width: int | None = None
    height: int | None = None
    bitrate: float | None = None
    plan: SegmentPlan | None = field(default=None, compare=False)


def _refuse_live() -> PermanentMediaError:
    return PermanentMediaError("live_not_supported", "This is a live stream; only finished videos can be stored.")


def _refuse_drm(scheme: str) -> PermanentMediaError:
    return PermanentMediaError(
        "drm_protected", "This video is DRM-protected and cannot be stored.", details={"scheme": scheme[:100]}
    )


# HLS ---------------------------------------------------------------------------


def hls_variants(text: str, url: str) -> list[Variant]:
    """The variants of a master playlist (empty for a media playlist)."""
    playlist = m3u8.loads(text, uri=url)
    variants = []
    for index, entry in enumerate(playlist.playlists):
        info = entry.stream_info
        width, height = info.resolution or (None, None)
        codecs = [codec.strip() for codec in (info.codecs or "").split(",") if codec.strip()]
        vcodec = next((c for c in codecs if not c.startswith(("mp4a", "opus", "ac-3", "ec-3"))), None)
        acodec = next((c for c in codecs if c.startswith(("mp4a", "opus", "ac-3", "ec-3"))), None)
        variants.append(
            Variant(
                stream_id=str(index),
                url=urllib.parse.urljoin(url, entry.uri),
                vcodec=vcodec or ("unknown" if not codecs else None),
                acodec=acodec or ("unknown" if not codecs else None),
                width=width,
                height=height,
                bitrate=info.bandwidth / 1000 if info.bandwidth else None,
            )
        )
    return variants


def hls_plan(text: str, url: str) -> SegmentPlan:
    """The segments of an HLS media playlist; refuses live playlists and any key but AES-128."""
    playlist = m3u8.loads(text, uri=url)
    if playlist.is_variant:
        raise PermanentMediaError("unsupported_content", "Expected an HLS media playlist, got a master playlist.")
    if not playlist.is_endlist and (playlist.playlist_type or "").lower() != "vod":
        raise _refuse_live()
    for key in playlist.keys:
        if key is None or key.method in (None, "NONE"):
            continue
        if key.method != "AES-128" or (key.keyformat and key.keyformat != "identity"):
            raise _refuse_drm(key.keyformat or key.method)
    if playlist.session_keys and any(k and k.method not in ("NONE", "AES-128") for k in playlist.session_keys):
        raise _refuse_drm("session key")
    segments: list[Segment] = []
    init: Segment | None = None
    duration = 0.0
    next_offset = 0
    sequence = playlist.media_sequence or 0
    for index, segment in enumerate(playlist.segments):
        if index >= MAX_SEGMENTS:
            raise PermanentMediaError("manifest_too_large", f"The playlist lists more than {MAX_SEGMENTS} segments.")
        if segment.init_section is not None and init is None:
            init_range = _hls_range(segment.init_section.byterange, 0)
            init = Segment(urllib.parse.urljoin(url, segment.init_section.uri), init_range[0] if init_range else None)
        byte_range = _hls_range(segment.byterange, next_offset)
        if byte_range:
            next_offset = byte_range[0][1] + 1
        key = segment.key if segment.key is not None and segment.key.method == "AES-128" else None
        iv = None
        if key is not None:
            iv = bytes.fromhex(key.iv[2:].rjust(32, "0")) if key.iv else (sequence + index).to_bytes(16, "big")
        segments.append(
            Segment(
                urllib.parse.urljoin(url, segment.uri),
                byte_range[0] if byte_range else None,
                key_url=urllib.parse.urljoin(url, key.uri) if key else None,
                key_iv=iv,
                sequence=sequence + index,
            )
        )
        duration += float(segment.duration or 0)
    if not segments:
        raise PermanentMediaError("unsupported_content", "The HLS playlist lists no segments.")
    hint = None if init is not None or segments[0].url.split("?")[0].endswith((".mp4", ".m4s")) else "mpegts"
    return SegmentPlan(tuple(segments), init, duration, hint)


def _hls_range(value: str | None, next_offset: int) -> tuple[tuple[int, int], int] | None:
    if not value:
        return None
    length, _, start = value.partition("@")
    first = int(start) if start else next_offset
    return (first, first + int(length) - 1), first


# DASH --------------------------------------------------------------------------


def parse_duration(value: str | None) -> float | None:
    """Seconds of an ISO 8601 duration as MPDs write them (PT1H2M3.5S, P1DT2H)."""
    if not value:
        return None
    found = _DURATION.fullmatch(value.strip())
    if not found:
        return None
    days, hours, minutes, seconds = (float(part) if part else 0.0 for part in found.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def dash_variants(text: str, url: str) -> list[Variant]:
    """Every representation of a static MPD's first period, each with its segment plan."""
    try:
        root = SafeElementTree.fromstring(text)
    except Exception as error:  # defusedxml's refusals and ParseError alike
        raise PermanentMediaError(
            "unsupported_content", f"The DASH manifest cannot be parsed: {type(error).__name__}"
        ) from error
    if root.get("type", "static") == "dynamic":
        raise _refuse_live()
    total = parse_duration(root.get("mediaPresentationDuration"))
    period = root.find(f"{_NS}Period")
    if period is None:
        raise PermanentMediaError("unsupported_content", "The DASH manifest has no Period.")
    total = total or parse_duration(period.get("duration"))
    base = _base_url(root, url)
    base = _base_url(period, base)
    variants: list[Variant] = []
    for adaptation in period.findall(f"{_NS}AdaptationSet"):
        protection = adaptation.find(f"{_NS}ContentProtection")
        adaptation_base = _base_url(adaptation, base)
        for representation in adaptation.findall(f"{_NS}Representation"):
            if protection is not None or representation.find(f"{_NS}ContentProtection") is not None:
                scheme = protection if protection is not None else representation.find(f"{_NS}ContentProtection")
                raise _refuse_drm(scheme.get("schemeIdUri", "ContentProtection"))
            variants.append(
                _representation(adaptation, representation, _base_url(representation, adaptation_base), total)
            )
    return variants


def _base_url(element: object, inherited: str) -> str:
    found = element.find(f"{_NS}BaseURL")  # type: ignore[attr-defined]
    return urllib.parse.urljoin(inherited, found.text.strip()) if found is not None and found.text else inherited


def _representation(adaptation: object, representation: object, base: str, total: float | None) -> Variant:
    attr = lambda name: representation.get(name) or adaptation.get(name)  # type: ignore[attr-defined]  # noqa: E731
    mime = attr("mimeType") or ""
    content = adaptation.get("contentType") or mime.split("/")[0]  # type: ignore[attr-defined]
    codecs = attr("codecs") or "unknown"
    rep_id = representation.get("id") or ""  # type: ignore[attr-defined]
    bandwidth = int(attr("bandwidth") or 0)
    template = _inherited(representation, adaptation, "SegmentTemplate")
    segment_list = _inherited(representation, adaptation, "SegmentList")
    if template is not None:
        plan = _template_plan(template, rep_id, bandwidth, base, total)
    elif segment_list is not None:
        plan = _list_plan(segment_list, base, total)
    else:
        plan = SegmentPlan((Segment(base),), None, total)  # SegmentBase or a bare BaseURL: one file
    height = attr("height")
    width = attr("width")
    return Variant(
        stream_id=rep_id,
        url=base,
        vcodec=codecs if content == "video" else None,
        acodec=codecs if content == "audio" else None,
        width=int(width) if width else None,
        height=int(height) if height else None,
        bitrate=bandwidth / 1000 if bandwidth else None,
        plan=plan,
    )


def _inherited(representation: object, adaptation: object, name: str) -> object | None:
    """The element on the representation, else on its adaptation set (an Element with no children is falsy)."""
    found = representation.find(f"{_NS}{name}")  # type: ignore[attr-defined]
    return found if found is not None else adaptation.find(f"{_NS}{name}")  # type: ignore[attr-defined]


def _fill(template: str, rep_id: str, bandwidth: int, number: int, time: int) -> str:
    def value(found: re.Match[str]) -> str:
        name, width = found.group(1), found.group(2)
        raw = {"RepresentationID": rep_id, "Number": number, "Time": time, "Bandwidth": bandwidth}[name]
        return str(raw).zfill(int(width)) if width else str(raw)

    return _TEMPLATE_FIELD.sub(value, template).replace("$$", "$")


def _template_plan(template: object, rep_id: str, bandwidth: int, base: str, total: float | None) -> SegmentPlan:
    get = template.get  # type: ignore[attr-defined]
    timescale = int(get("timescale") or 1)
    start_number = int(get("startNumber") or 1)
    media = get("media")
    if not media:
        raise PermanentMediaError("unsupported_content", "A DASH SegmentTemplate has no media attribute.")
    init = get("initialization")
    init_segment = Segment(urllib.parse.urljoin(base, _fill(init, rep_id, bandwidth, 0, 0))) if init else None
    timeline = template.find(f"{_NS}SegmentTimeline")  # type: ignore[attr-defined]
    segments: list[Segment] = []
    if timeline is not None:
        time, number = 0, start_number
        for entry in timeline.findall(f"{_NS}S"):
            time = int(entry.get("t", time))
            length = int(entry.get("d"))
            for _ in range(int(entry.get("r", "0")) + 1):
                segments.append(Segment(urllib.parse.urljoin(base, _fill(media, rep_id, bandwidth, number, time))))
                time += length
                number += 1
                if len(segments) > MAX_SEGMENTS:
                    raise PermanentMediaError("manifest_too_large", "The manifest lists too many segments.")
        duration = time / timescale
    else:
        length = int(get("duration") or 0)
        if not length or not total:
            raise PermanentMediaError("unsupported_content", "A DASH SegmentTemplate without duration or timeline.")
        count = math.ceil(total * timescale / length - 1e-9)
        if count > MAX_SEGMENTS:
            raise PermanentMediaError("manifest_too_large", "The manifest lists too many segments.")
        segments = [
            Segment(urllib.parse.urljoin(base, _fill(media, rep_id, bandwidth, start_number + i, i * length)))
            for i in range(count)
        ]
        duration = total
    return SegmentPlan(tuple(segments), init_segment, duration)


def _list_plan(segment_list: object, base: str, total: float | None) -> SegmentPlan:
    init_element = segment_list.find(f"{_NS}Initialization")  # type: ignore[attr-defined]
    init = None
    if init_element is not None:
        init = Segment(
            urllib.parse.urljoin(base, init_element.get("sourceURL") or ""), _dash_range(init_element.get("range"))
        )
    segments = tuple(
        Segment(urllib.parse.urljoin(base, entry.get("media") or ""), _dash_range(entry.get("mediaRange")))
        for entry in segment_list.findall(f"{_NS}SegmentURL")
    )  # type: ignore[attr-defined]
    return SegmentPlan(segments, init, total)


def _dash_range(value: str | None) -> tuple[int, int] | None:
    if not value:
        return None
    start, _, end = value.partition("-")
    return int(start), int(end)
