"""HLS playlists (parsed by `m3u8`) and DASH manifests (parsed with `defusedxml`) turned into segment lists.

A `SegmentPlan` is everything the fetcher needs for one stream: the URLs (with byte ranges) of its
init segment and media segments, in order, and the total duration. Live streams and DRM are refused
here, before any segment is fetched: `live_not_supported`, `drm_protected`.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterator
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
    """A stream a manifest offers (an HLS variant or a DASH representation).

    `kind` (``video``/``audio``), `language`, `period` and `adaptation` (indexes in the MPD) are DASH's.
    """

    stream_id: str
    url: str
    vcodec: str | None
    acodec: str | None
    width: int | None = None
    height: int | None = None
    bitrate: float | None = None
    plan: SegmentPlan | None = field(default=None, compare=False)
    kind: str | None = None
    language: str | None = None
    period: int = 0
    adaptation: int = 0


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


def dash_periods(text: str, url: str) -> list[list[Variant]]:
    """Every video and audio representation of a static MPD, period by period, each with its segment plan."""
    try:
        root = SafeElementTree.fromstring(text)
    except Exception as error:  # defusedxml's refusals and ParseError alike
        raise PermanentMediaError(
            "unsupported_content", f"The DASH manifest cannot be parsed: {type(error).__name__}"
        ) from error
    if root.get("type", "static") == "dynamic":
        raise _refuse_live()
    periods = root.findall(f"{_NS}Period")
    if not periods:
        raise PermanentMediaError("unsupported_content", "The DASH manifest has no Period.")
    base = _base_url(root, url)
    durations = _period_durations(periods, parse_duration(root.get("mediaPresentationDuration")))
    found: list[list[Variant]] = []
    for period_index, (period, duration) in enumerate(zip(periods, durations, strict=True)):
        period_base = _base_url(period, base)
        variants: list[Variant] = []
        for adaptation_index, adaptation in enumerate(period.findall(f"{_NS}AdaptationSet")):
            protection = adaptation.find(f"{_NS}ContentProtection")
            adaptation_base = _base_url(adaptation, period_base)
            for representation in adaptation.findall(f"{_NS}Representation"):
                if protection is not None or representation.find(f"{_NS}ContentProtection") is not None:
                    scheme = protection if protection is not None else representation.find(f"{_NS}ContentProtection")
                    raise _refuse_drm(scheme.get("schemeIdUri", "ContentProtection"))
                variant = _representation(
                    (representation, adaptation, period),
                    _base_url(representation, adaptation_base),
                    duration,
                    place=(period_index, adaptation_index),
                )
                if variant.kind is not None:
                    variants.append(variant)
        found.append(variants)
    return found


def dash_variants(text: str, url: str) -> list[Variant]:
    """The video and audio representations of a static MPD's first period, each with its segment plan."""
    return dash_periods(text, url)[0]


def _period_durations(periods: list[object], total: float | None) -> list[float | None]:
    """Each period's length: its ``duration``, else up to the next period's ``start`` (or the MPD's end)."""
    starts = [parse_duration(period.get("start")) for period in periods]  # type: ignore[attr-defined]
    durations: list[float | None] = []
    for index, period in enumerate(periods):
        own = parse_duration(period.get("duration"))  # type: ignore[attr-defined]
        following = starts[index + 1] if index + 1 < len(periods) else total
        start = starts[index] if starts[index] is not None else (0.0 if index == 0 else None)
        if own is None and following is not None and start is not None:
            own = following - start
        durations.append(own if own is not None else (total if len(periods) == 1 else None))
    return durations


@dataclass(frozen=True)
class WantedRepresentation:
    """What is known of the representation a format names: its id as the provider spelled it, and its traits."""

    stream_id: str | None
    kind: str
    height: int | None = None
    width: int | None = None
    bitrate: float | None = None
    codec: str | None = None
    language: str | None = None

    @classmethod
    def of(cls, variant: Variant) -> WantedRepresentation:
        return cls(
            variant.stream_id,
            variant.kind or "video",
            variant.height,
            variant.width,
            variant.bitrate,
            variant.vcodec or variant.acodec,
            variant.language,
        )


#: yt-dlp replaces these characters of a representation id with ``_`` in its format ids.
_YTDLP_ID_CHARACTERS = re.compile(r"[\s,/+\[\]()]")
#: yt-dlp appends ``-0``, ``-1``... to format ids that repeat (the same id in two adaptation sets).
_YTDLP_REPEAT_SUFFIX = re.compile(r"^(.+)-\d+$")


def find_representation(variants: list[Variant], wanted: WantedRepresentation) -> Variant | None:
    """The representation `wanted` names among one period's `variants`, or None.

    Only representations of the wanted kind (video or audio) are candidates. Those whose id is the
    wanted id (as given, as yt-dlp spells it, or less yt-dlp's repeat suffix) win, ties broken by
    bandwidth, height, codec and language; without an id match, those traits alone must agree (the
    bandwidth, or the height and codec family, or for audio the codec and language).
    """
    candidates = [variant for variant in variants if variant.kind == wanted.kind]
    for matches in _id_matches(candidates, wanted.stream_id):
        if matches:
            return max(matches, key=lambda variant: _likeness(variant, wanted))
    if not candidates:
        return None
    best = max(candidates, key=lambda variant: _likeness(variant, wanted))
    return best if _likeness(best, wanted) >= _ENOUGH_LIKENESS else None


def _id_matches(candidates: list[Variant], stream_id: str | None) -> Iterator[list[Variant]]:
    if not stream_id:
        return
    yield [variant for variant in candidates if variant.stream_id == stream_id]
    yield [variant for variant in candidates if _YTDLP_ID_CHARACTERS.sub("_", variant.stream_id) == stream_id]
    repeated = _YTDLP_REPEAT_SUFFIX.match(stream_id)
    if repeated:
        base = repeated.group(1)
        yield [variant for variant in candidates if _YTDLP_ID_CHARACTERS.sub("_", variant.stream_id) == base]


#: A traits-only match needs the bandwidth (4), or the height and codec family (2 + 1), or codec and language.
_ENOUGH_LIKENESS = 3


def _likeness(variant: Variant, wanted: WantedRepresentation) -> int:
    """How well a representation's traits agree with the wanted ones (a disagreement counts against)."""
    score = 0
    if wanted.bitrate and variant.bitrate:
        score += 4 if abs(variant.bitrate - wanted.bitrate) <= 0.01 * max(variant.bitrate, wanted.bitrate) else -1
    if wanted.height and variant.height:
        score += 2 if wanted.height == variant.height else -4
    if wanted.width and variant.width:
        score += 1 if wanted.width == variant.width else -2
    codec = variant.vcodec or variant.acodec
    if wanted.codec and wanted.codec != "unknown" and codec and codec != "unknown":
        if codec.lower() == wanted.codec.lower():
            score += 2
        elif _codec_family(codec) == _codec_family(wanted.codec):
            score += 1
        else:
            score -= 4
    if wanted.language and variant.language:
        score += 1 if _language(variant.language) == _language(wanted.language) else -2
    return score


def _codec_family(codec: str) -> str:
    return codec.lower().split(".")[0].replace("avc3", "avc1").replace("hev1", "hvc1")


def _language(tag: str) -> str:
    return tag.lower().replace("_", "-").split("-")[0]


def dash_plan(text: str, url: str, wanted: WantedRepresentation) -> SegmentPlan:
    """The wanted representation's segments through every period of the manifest.

    The first period's representation is found with `find_representation`; in each later period the
    one with that representation's id (else its traits) continues it, as yt-dlp joins periods. A
    period without it is refused rather than silently cut from the stored video.
    """
    periods = dash_periods(text, url)
    first = find_representation(periods[0], wanted)
    if first is None or first.plan is None:
        offered = [v for period in periods for v in period]
        raise PermanentMediaError(
            "no_suitable_format",
            f"The DASH manifest has no {wanted.kind} representation {wanted.stream_id!r}.",
            details={"best_available_height": max((v.height or 0 for v in offered), default=None)},
        )
    if len(periods) == 1:
        return first.plan
    segments = list(first.plan.segments)
    duration = first.plan.duration
    for later in periods[1:]:
        match = find_representation(later, WantedRepresentation.of(first))
        if match is None or match.plan is None:
            raise PermanentMediaError(
                "unsupported_content",
                f"A later period of the DASH manifest lacks representation {first.stream_id!r}.",
            )
        if match.plan.init is not None and match.plan.init != first.plan.init:
            segments.append(match.plan.init)
        segments.extend(match.plan.segments)
        duration = duration + match.plan.duration if duration is not None and match.plan.duration else None
        if len(segments) > MAX_SEGMENTS:
            raise PermanentMediaError("manifest_too_large", "The manifest lists too many segments.")
    return SegmentPlan(tuple(segments), first.plan.init, duration, first.plan.format_hint)


def _base_url(element: object, inherited: str) -> str:
    found = element.find(f"{_NS}BaseURL")  # type: ignore[attr-defined]
    return urllib.parse.urljoin(inherited, found.text.strip()) if found is not None and found.text else inherited


def _representation(
    elements: tuple[object, object, object], base: str, total: float | None, *, place: tuple[int, int]
) -> Variant:
    representation, adaptation, period = elements
    attr = lambda name: representation.get(name) or adaptation.get(name)  # type: ignore[attr-defined]  # noqa: E731
    mime = attr("mimeType") or ""
    content = attr("contentType") or mime.split("/")[0]
    codecs = attr("codecs") or "unknown"
    if content not in ("video", "audio"):  # no usable type: the codec says, as in yt-dlp
        family = _codec_family(codecs)
        content = "audio" if family in _AUDIO_FAMILIES else "video" if family in _VIDEO_FAMILIES else content
    rep_id = representation.get("id") or ""  # type: ignore[attr-defined]
    bandwidth = int(attr("bandwidth") or 0)
    template = _inherited(elements, "SegmentTemplate")
    segment_list = _inherited(elements, "SegmentList")
    if template is not None:
        plan = _template_plan(template, rep_id, bandwidth, base, total)
    elif segment_list is not None:
        plan = _list_plan(segment_list, base, total)
    else:
        plan = SegmentPlan((Segment(base),), None, total)  # SegmentBase or a bare BaseURL: one file
    height = attr("height")
    width = attr("width")
    language = attr("lang")
    return Variant(
        stream_id=rep_id,
        url=base,
        vcodec=codecs if content == "video" else None,
        acodec=codecs if content == "audio" else None,
        width=int(width) if width else None,
        height=int(height) if height else None,
        bitrate=bandwidth / 1000 if bandwidth else None,
        plan=plan,
        kind=content if content in ("video", "audio") else None,
        language=language if language not in (None, "und", "mul", "zxx", "mis") else None,
        period=place[0],
        adaptation=place[1],
    )


_AUDIO_FAMILIES = frozenset({"mp4a", "opus", "vorbis", "flac", "ac-3", "ec-3", "mp3", "dtsc", "alac"})
_VIDEO_FAMILIES = frozenset({"avc1", "hvc1", "av01", "vp09", "vp9", "vp8", "dvh1", "dvhe"})


def _inherited(elements: tuple[object, ...], name: str) -> object | None:
    """The element on the representation, else on its adaptation set, else on its period."""
    for element in elements:
        found = element.find(f"{_NS}{name}")  # type: ignore[attr-defined]
        if found is not None:  # an Element with no children is falsy: compare with None
            return found
    return None


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
