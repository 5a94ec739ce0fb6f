"""The format chooser: height limit, codec preference, merging, mute, audio formats, and its reasons."""

from __future__ import annotations

import pytest

from application.format_choice import FormatRequest, choose_formats, codec_family
from application.ports.errors import PermanentMediaError
from application.ports.media_provider import MediaFormat, MediaInfo, VideoSource


def fmt(
    format_id: str,
    vcodec: str | None,
    acodec: str | None,
    height: int | None = None,
    bitrate: float = 0,
    protocol: str = "dash",
) -> MediaFormat:
    return MediaFormat(
        format_id,
        protocol,
        f"https://cdn.example/{format_id}",
        vcodec=vcodec,
        acodec=acodec,  # type: ignore[arg-type]
        height=height,
        bitrate=bitrate,
    )


YOUTUBE_LIKE = [
    fmt("18", "avc1.42001E", "mp4a.40.2", 360, 500, protocol="https"),
    fmt("137", "avc1.640028", None, 1080, 4000),
    fmt("248", "vp09.00.40.08", None, 1080, 3000),
    fmt("136", "avc1.4d401f", None, 720, 2000),
    fmt("399", "av01.0.08M.08", None, 1080, 2500),
    fmt("2160", "vp09.00.50.08", None, 2160, 12000),
    fmt("140", None, "mp4a.40.2", bitrate=128),
    fmt("251", None, "opus", bitrate=160),
]


def test_codec_families() -> None:
    assert [codec_family(c) for c in ("avc1.64001e", "vp09.00.10.08", "av01.0.05M.08", "mp4a.40.2", "opus", None)] == [
        "h264",
        "vp9",
        "av1",
        "aac",
        "opus",
        None,
    ]


def test_tallest_under_the_limit_in_the_preferred_codec_merged_with_fitting_audio() -> None:
    choice = choose_formats(YOUTUBE_LIKE, FormatRequest())
    assert (choice.video.format_id, choice.audio.format_id, choice.container) == ("137", "140", "mp4")
    assert any("1080p" in reason for reason in choice.reasons)
    assert choice.summary()["format_ids"] == ["137", "140"] and "url" not in choice.summary()["video"]


def test_vp9_preference_gives_webm_with_opus() -> None:
    choice = choose_formats(YOUTUBE_LIKE, FormatRequest(video_codec="vp9"))
    assert (choice.video.format_id, choice.audio.format_id, choice.container) == ("248", "251", "webm")


def test_a_lower_limit_and_a_missing_codec_are_explained() -> None:
    choice = choose_formats(YOUTUBE_LIKE, FormatRequest(max_height=720, video_codec="av1"))
    assert choice.video.format_id == "136"
    assert any("no av1 format at 720p" in reason for reason in choice.reasons)


def test_mute_leaves_the_audio_out_and_progressive_passes_through() -> None:
    assert choose_formats(YOUTUBE_LIKE, FormatRequest(mute=True)).audio is None
    progressive = choose_formats(YOUTUBE_LIKE, FormatRequest(max_height=360))
    assert progressive.video.format_id == "18" and progressive.is_passthrough


def test_nothing_under_the_limit_names_the_lowest_height() -> None:
    with pytest.raises(PermanentMediaError) as raised:
        choose_formats([fmt("a", "avc1", "mp4a", 720), fmt("b", "avc1", "mp4a", 480)], FormatRequest(max_height=240))
    assert raised.value.code == "no_suitable_format" and raised.value.details["best_available_height"] == 480


@pytest.mark.parametrize(
    ("audio_format", "chosen", "container", "encoder"),
    [
        ("best", "251", "ogg", None),
        ("m4a", "140", "m4a", None),
        ("opus", "251", "ogg", None),
        ("mp3", "251", "mp3", "mp3"),
    ],
)
def test_audio_formats(audio_format: str, chosen: str, container: str, encoder: str | None) -> None:
    choice = choose_formats(YOUTUBE_LIKE, FormatRequest(output="audio", audio_format=audio_format))
    assert (choice.audio.format_id, choice.container, choice.audio_encoder, choice.video) == (
        chosen,
        container,
        encoder,
        None,
    )


def test_audio_from_a_muxed_format_is_encoded_when_the_codec_differs() -> None:
    choice = choose_formats(
        [fmt("hls-1", "avc1", "mp4a.40.2", 360)], FormatRequest(output="audio", audio_format="opus")
    )
    assert (choice.audio.format_id, choice.audio_encoder, choice.container) == ("hls-1", "opus", "ogg")


def test_a_provider_with_only_a_video_url_still_streams_it_as_it_is() -> None:
    info = MediaInfo("tiktok", "1", "t", video=VideoSource("https://cdn.example/v.mp4", 10, "video/mp4"))
    choice = choose_formats(info.playable_formats(), FormatRequest())
    assert choice.is_passthrough and choice.container == "mp4"


def test_formats_and_items_round_trip_through_dicts() -> None:
    info = MediaInfo("x", "1", "t", formats=tuple(YOUTUBE_LIKE[:2]), items=(MediaInfo("x", "2", "u"),), drm=True)
    assert MediaInfo.from_dict(info.to_dict()) == info
