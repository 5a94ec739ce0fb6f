"""HLS and DASH manifests to segment plans: templates, timelines, lists, byte ranges, keys, live and DRM."""

from __future__ import annotations

import pytest

from application.ports.errors import PermanentMediaError
from infrastructure.media_formats.manifests import (
    WantedRepresentation,
    dash_plan,
    dash_variants,
    find_representation,
    hls_plan,
    hls_variants,
    parse_duration,
)

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


# Representation matching: manifests shaped like real ones ------------------------------------------

#: Shaka/GPAC-style: ids restart in every adaptation set, two audio languages, two periods (an intro).
REPEATING_IDS = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT12S">
 <Period id="intro" duration="PT4S">
  <AdaptationSet mimeType="video/mp4" segmentAlignment="true">
   <SegmentTemplate timescale="1" duration="2" startNumber="1"
                    initialization="intro/$RepresentationID$-v-init.mp4" media="intro/$RepresentationID$-v-$Number$.m4s"/>
   <Representation id="1" codecs="avc1.4d401e" bandwidth="800000" width="640" height="360"/>
   <Representation id="2" codecs="avc1.64001f" bandwidth="2400000" width="1280" height="720"/>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4" lang="en">
   <SegmentTemplate timescale="1" duration="2" startNumber="1"
                    initialization="intro/$RepresentationID$-en-init.mp4" media="intro/$RepresentationID$-en-$Number$.m4s"/>
   <Representation id="1" codecs="mp4a.40.2" bandwidth="128000"/>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4" lang="de">
   <SegmentTemplate timescale="1" duration="2" startNumber="1"
                    initialization="intro/$RepresentationID$-de-init.mp4" media="intro/$RepresentationID$-de-$Number$.m4s"/>
   <Representation id="1" codecs="mp4a.40.2" bandwidth="128000"/>
  </AdaptationSet>
 </Period>
 <Period id="main" start="PT4S">
  <AdaptationSet mimeType="video/mp4">
   <SegmentTemplate timescale="1" duration="4" initialization="main/$RepresentationID$-v-init.mp4"
                    media="main/$RepresentationID$-v-$Number$.m4s"/>
   <Representation id="2" codecs="avc1.64001f" bandwidth="2400000" width="1280" height="720"/>
   <Representation id="1" codecs="avc1.4d401e" bandwidth="800000" width="640" height="360"/>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4" lang="de">
   <SegmentTemplate timescale="1" duration="4" initialization="main/$RepresentationID$-de-init.mp4"
                    media="main/$RepresentationID$-de-$Number$.m4s"/>
   <Representation id="1" codecs="mp4a.40.2" bandwidth="128000"/>
  </AdaptationSet>
  <AdaptationSet mimeType="audio/mp4" lang="en">
   <SegmentTemplate timescale="1" duration="4" initialization="main/$RepresentationID$-en-init.mp4"
                    media="main/$RepresentationID$-en-$Number$.m4s"/>
   <Representation id="1" codecs="mp4a.40.2" bandwidth="128000"/>
  </AdaptationSet>
 </Period>
</MPD>"""

#: Unified Streaming / Vimeo style: descriptive ids (with characters yt-dlp rewrites), codecs on the set.
DESCRIPTIVE_IDS = """<?xml version="1.0"?>
<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT8S">
 <Period>
  <BaseURL>https://cdn.example/vod/</BaseURL>
  <AdaptationSet contentType="audio" mimeType="audio/mp4" codecs="mp4a.40.2" lang="en">
   <SegmentTemplate timescale="48000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Time$.m4s">
    <SegmentTimeline><S t="0" d="192000" r="1"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="audio_eng=64000" bandwidth="64000"/>
   <Representation id="audio_eng=128000" bandwidth="128000"/>
  </AdaptationSet>
  <AdaptationSet contentType="video" mimeType="video/mp4" codecs="avc1.640028">
   <SegmentTemplate timescale="90000" initialization="$RepresentationID$/init.mp4" media="$RepresentationID$/$Time$.m4s">
    <SegmentTimeline><S t="0" d="360000" r="1"/></SegmentTimeline>
   </SegmentTemplate>
   <Representation id="video 1080/main (high)" bandwidth="4800000" width="1920" height="1080"/>
   <Representation id="video=2400000" bandwidth="2400000" width="1280" height="720"/>
  </AdaptationSet>
 </Period>
</MPD>"""

URL = "https://cdn.example/vod/manifest.mpd"


def test_an_id_repeated_across_adaptation_sets_is_found_in_the_right_kind_and_language() -> None:
    video = dash_plan(REPEATING_IDS, URL, WantedRepresentation("1", "video", height=360))
    assert video.init.url == "https://cdn.example/vod/intro/1-v-init.mp4"
    german = dash_plan(REPEATING_IDS, URL, WantedRepresentation("1", "audio", codec="mp4a.40.2", language="de"))
    assert german.init.url == "https://cdn.example/vod/intro/1-de-init.mp4"
    english = dash_plan(REPEATING_IDS, URL, WantedRepresentation("1", "audio", codec="mp4a.40.2", language="en"))
    assert english.init.url == "https://cdn.example/vod/intro/1-en-init.mp4"


def test_periods_are_joined_by_the_representation_id_in_the_same_set() -> None:
    plan = dash_plan(REPEATING_IDS, URL, WantedRepresentation("2", "video", height=720, bitrate=2400))
    assert [s.url.removeprefix("https://cdn.example/vod/") for s in plan.segments] == [
        "intro/2-v-1.m4s",
        "intro/2-v-2.m4s",
        "main/2-v-init.mp4",  # the next period's own init, as yt-dlp joins periods
        "main/2-v-1.m4s",
        "main/2-v-2.m4s",
    ]
    assert plan.duration == 12
    german = dash_plan(REPEATING_IDS, URL, WantedRepresentation("1", "audio", language="de"))
    assert [s.url.removeprefix("https://cdn.example/vod/") for s in german.segments] == [
        "intro/1-de-1.m4s",
        "intro/1-de-2.m4s",
        "main/1-de-init.mp4",  # the German set is the first audio set of "intro", the second of "main"
        "main/1-de-1.m4s",
        "main/1-de-2.m4s",
    ]


def test_ytdlp_spellings_of_an_id_are_matched() -> None:
    # yt-dlp writes "video_1080_main__high_" for the id, and "1-0"/"1-1" when an id repeats.
    plan = dash_plan(DESCRIPTIVE_IDS, URL, WantedRepresentation("video_1080_main__high_", "video"))
    assert plan.init.url == "https://cdn.example/vod/video 1080/main (high)/init.mp4"  # httpx quotes it
    repeated = dash_plan(REPEATING_IDS, URL, WantedRepresentation("1-1", "audio", language="en"))
    assert repeated.init.url.endswith("intro/1-en-init.mp4")


def test_a_different_id_falls_back_to_bandwidth_height_and_codecs() -> None:
    by_bandwidth = dash_plan(DESCRIPTIVE_IDS, URL, WantedRepresentation("f3-a2", "audio", bitrate=128.0))
    assert by_bandwidth.init.url == "https://cdn.example/vod/audio_eng=128000/init.mp4"
    by_height = dash_plan(DESCRIPTIVE_IDS, URL, WantedRepresentation("hd", "video", height=720, codec="avc1.640028"))
    assert by_height.init.url == "https://cdn.example/vod/video=2400000/init.mp4"
    assert [s.url.rsplit("/", 1)[-1] for s in by_height.segments] == ["0.m4s", "360000.m4s"]


def test_no_representation_of_the_traits_is_no_suitable_format() -> None:
    with pytest.raises(PermanentMediaError, match="no_suitable_format") as raised:
        dash_plan(DESCRIPTIVE_IDS, URL, WantedRepresentation("4k", "video", height=2160, codec="av01.0.12M.08"))
    assert raised.value.details["best_available_height"] == 1080
    with pytest.raises(PermanentMediaError, match="no_suitable_format"):
        dash_plan(DESCRIPTIVE_IDS, URL, WantedRepresentation("1", "audio", codec="opus"))


def test_find_representation_prefers_the_id_over_traits() -> None:
    (variants,) = [dash_variants(DESCRIPTIVE_IDS, URL)]
    found = find_representation(variants, WantedRepresentation("audio_eng=64000", "audio", bitrate=128.0))
    assert found is not None and found.stream_id == "audio_eng=64000" and found.language == "en"
