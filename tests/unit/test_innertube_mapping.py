"""YouTube InnerTube player responses (real, saved by youtube-transcript-api) mapped to MediaInfo."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from application.ports.errors import PermanentMediaError, TransientMediaError
from application.ports.media_provider import MediaInfo
from infrastructure.providers.innertube import media_info_from_innertube, with_format
from tests.support.shared_fixtures import fixtures_dir


def load(name: str) -> dict[str, Any]:
    return json.loads((fixtures_dir() / "provider-responses" / name).read_text(encoding="utf-8"))


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_full_response_has_nine_tracks_one_of_them_asr() -> None:
    info = media_info_from_innertube(load("youtube.innertube.json"))
    assert info.platform == "youtube"
    assert info.media_id == "GJLlxj_dtq8"
    assert info.title == "Surface Go Review - It’s Awesome"
    assert info.duration == 316.0
    assert info.uploader == "Dave2D"
    assert info.thumbnail_url is not None and "GJLlxj_dtq8" in info.thumbnail_url
    assert len(info.subtitles) == 9
    manual = [track.lang for track in info.subtitles if track.kind == "manual"]
    asr = [track.lang for track in info.subtitles if track.kind == "asr"]
    assert manual == ["zh", "cs", "en", "de", "hi", "ja", "ko", "es"]
    assert asr == ["en"]
    assert info.subtitles[-1].kind == "asr", "manual tracks come first"
    assert len(info.extra["translation_languages"]) == 18
    for track in info.subtitles:
        assert track.format == "json3"
        params = query(track.url)
        assert params["fmt"] == ["json3"], "srv3 is replaced, not duplicated"
        assert params["lang"] == [track.lang]
        assert params["v"] == ["GJLlxj_dtq8"]
        assert track.url.startswith("https://www.youtube.com/api/timedtext?")
    english_asr = info.subtitles_for("en")[1]
    assert english_asr.kind == "asr" and english_asr.name == "English (auto-generated)"
    assert query(english_asr.url)["kind"] == ["asr"]
    assert info.video is not None and info.video.mime_type == "video/mp4"
    assert "googlevideo.com/videoplayback" in info.video.url


def test_manual_and_asr_english() -> None:
    info = media_info_from_innertube(load("youtube_ww1_nl_en.innertube.json"))
    assert info.media_id == "F1xioXWb8CY"
    assert [(track.lang, track.kind) for track in info.subtitles] == [("en", "manual"), ("en", "asr")]
    assert len(info.extra["translation_languages"]) == 17
    assert info.duration == 1509.0


def test_no_captions_key_means_no_subtitles() -> None:
    info = media_info_from_innertube(load("youtube_transcripts_disabled.innertube.json"))
    assert info.media_id == "dsMFmonKDD4"
    assert info.subtitles == ()
    assert info.extra["captions_available"] is False
    assert info.video is not None, "the video itself is still playable"


def test_login_required_bot_check_is_permanent_media_private() -> None:
    with pytest.raises(PermanentMediaError) as raised:
        media_info_from_innertube(load("youtube_request_blocked.innertube.json"))
    assert raised.value.code == "media_private"
    assert raised.value.retryable is False
    assert raised.value.details["playability_status"] == "LOGIN_REQUIRED"
    assert raised.value.details["bot_check"] is True
    assert "not a bot" in raised.value.message


def test_mapped_info_round_trips_through_json() -> None:
    info = media_info_from_innertube(load("youtube.innertube.json"))
    assert MediaInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info


@pytest.mark.parametrize(
    ("status", "code"),
    [("ERROR", "media_not_found"), ("UNPLAYABLE", "media_private"), ("LIVE_STREAM_OFFLINE", "unsupported_content")],
)
def test_other_unplayable_statuses(status: str, code: str) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        media_info_from_innertube({"playabilityStatus": {"status": status, "reason": "nope"}})
    assert raised.value.code == code


def test_unknown_status_or_missing_details_is_a_bad_response() -> None:
    with pytest.raises(TransientMediaError) as raised:
        media_info_from_innertube({"playabilityStatus": {"status": "SOMETHING_NEW"}})
    assert raised.value.code == "provider_bad_response"
    with pytest.raises(TransientMediaError):
        media_info_from_innertube({"playabilityStatus": {"status": "OK"}})


def test_with_format_adds_or_replaces_fmt() -> None:
    assert (
        with_format("https://h/api/timedtext?v=a&lang=en", "json3") == "https://h/api/timedtext?v=a&lang=en&fmt=json3"
    )
    assert query(with_format("https://h/t?fmt=srv3&v=a", "json3")) == {"v": ["a"], "fmt": ["json3"]}
