"""HLS and DASH manifests to segment plans: templates, timelines, lists, byte ranges, keys, live and DRM."""

from __future__ import annotations

import pytest

from application.ports.errors import PermanentMediaError
from infrastructure.media_formats.manifests import dash_variants, hls_plan, hls_variants, parse_duration

MPD = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="{type}" mediaPresentationDuration="PT4S">
 <BaseURL>https://cdn.example/v/</BaseURL>
 <Period>
  <AdaptationSet contentType="video" mimeType="video/mp4">{protection}
   <SegmentTemplate timescale="1000" initialization="$RepresentationID$/init.mp4"
                    media="$RepresentationID$/t$Time$.m4s">
    <SegmentTimeline><S t="0" d="2000" r="1"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="720" codecs="avc1.64001f" bandwidth="2000000" width="1280" height="720"/>
  </AdaptationSet>
  <AdaptationSet contentType="audio" mimeType="audio/mp4">
   <Representation id="a" codecs="mp4a.40.2" bandwidth="128000">
    <SegmentList><Initialization sourceURL="audio.mp4" range="0-99"/>
     <SegmentURL media="audio.mp4" mediaRange="100-199"/><SegmentURL media="audio.mp4" mediaRange="200-299"/>
    </SegmentList>
   </Representation>
   <Representation id="b" codecs="opus" bandwidth="96000"><BaseURL>opus.webm</BaseURL><SegmentBase/></Representation>
  </AdaptationSet>
 </Period>
</MPD>"""


def test_dash_timeline_list_and_base() -> None:
    video, audio, single = dash_variants(MPD.format(type="static", protection=""), "https://cdn.example/m.mpd")
    assert (video.height, video.vcodec, video.bitrate) == (720, "avc1.64001f", 2000)
    assert [s.url for s in video.plan.segments] == [
        "https://cdn.example/v/720/t0.m4s",
        "https://cdn.example/v/720/t2000.m4s",
    ]
    assert video.plan.init.url == "https://cdn.example/v/720/init.mp4" and video.plan.duration == 4
    assert audio.plan.init.byte_range == (0, 99) and [s.headers() for s in audio.plan.segments] == [
        {"Range": "bytes=100-199"},
        {"Range": "bytes=200-299"},
    ]
    assert single.plan.segments[0].url == "https://cdn.example/v/opus.webm" and single.acodec == "opus"


def test_dash_live_and_drm_are_refused() -> None:
    with pytest.raises(PermanentMediaError, match="live_not_supported"):
        dash_variants(MPD.format(type="dynamic", protection=""), "https://cdn.example/m.mpd")
    with pytest.raises(PermanentMediaError, match="drm_protected"):
        dash_variants(
            MPD.format(type="static", protection='<ContentProtection schemeIdUri="urn:uuid:x"/>'),
            "https://cdn.example/m.mpd",
        )


def test_dash_entities_are_refused() -> None:
    bomb = '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaa">]><MPD xmlns="urn:mpeg:dash:schema:mpd:2011">&a;</MPD>'
    with pytest.raises(PermanentMediaError, match="unsupported_content"):
        dash_variants(bomb, "https://cdn.example/m.mpd")


HLS = """#EXTM3U
#EXT-X-VERSION:7
#EXT-X-TARGETDURATION:2
#EXT-X-MEDIA-SEQUENCE:5
#EXT-X-MAP:URI="init.mp4",BYTERANGE="500@0"
#EXT-X-KEY:METHOD=AES-128,URI="key.bin"
#EXTINF:2.0,
#EXT-X-BYTERANGE:1000@500
media.mp4
#EXTINF:1.5,
#EXT-X-BYTERANGE:800
media.mp4
{end}"""


def test_hls_map_byte_ranges_and_keys() -> None:
    plan = hls_plan(HLS.format(end="#EXT-X-ENDLIST"), "https://cdn.example/p/index.m3u8")
    assert plan.init.url == "https://cdn.example/p/init.mp4" and plan.init.byte_range == (0, 499)
    assert [s.byte_range for s in plan.segments] == [(500, 1499), (1500, 2299)]
    assert plan.segments[0].key_url == "https://cdn.example/p/key.bin"
    assert plan.segments[1].key_iv == (6).to_bytes(16, "big") and plan.duration == 3.5


def test_hls_live_and_sample_aes_are_refused() -> None:
    with pytest.raises(PermanentMediaError, match="live_not_supported"):
        hls_plan(HLS.format(end=""), "https://cdn.example/p/index.m3u8")
    drm = HLS.format(end="#EXT-X-ENDLIST").replace("METHOD=AES-128", "METHOD=SAMPLE-AES")
    with pytest.raises(PermanentMediaError, match="drm_protected"):
        hls_plan(drm, "https://cdn.example/p/index.m3u8")


def test_hls_master_variants() -> None:
    master = (
        '#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.4d401e,mp4a.40.2"\n'
        "360/index.m3u8\n"
    )
    (variant,) = hls_variants(master, "https://cdn.example/master.m3u8")
    assert (variant.url, variant.height, variant.vcodec, variant.acodec) == (
        "https://cdn.example/360/index.m3u8",
        360,
        "avc1.4d401e",
        "mp4a.40.2",
    )


def test_iso_durations() -> None:
    assert parse_duration("PT1H2M3.5S") == 3723.5 and parse_duration("P1DT1S") == 86401 and parse_duration("x") is None
