"""The supported-platform URL rules: which links are accepted, how they are normalized, which are refused."""

from __future__ import annotations

import pytest

from domain.errors import DomainError
from domain.platforms import (
    _WHITESPACE_OR_CONTROL,
    MAX_URL_LENGTH,
    PLATFORMS,
    InvalidUrl,
    SubmissionUrlError,
    UnsupportedUrl,
    identify_platform,
    normalize_media_url,
    platform_by_name,
    validate_submission_url,
)

SUPPORTED = [
    # TikTok
    ("tiktok", "https://www.tiktok.com/@scout2015/video/6718335390845095173"),
    ("tiktok", "https://www.tiktok.com/@the.real_user-1/video/7301?is_from_webapp=1&sender_device=pc"),
    ("tiktok", "https://m.tiktok.com/v/6718335390845095173.html"),
    ("tiktok", "https://www.tiktok.com/embed/v2/6718335390845095173"),
    ("tiktok", "https://www.tiktok.com/@user/photo/7301234567890123456"),
    ("tiktok", "https://www.tiktok.com/t/ZTRabc123/"),
    ("tiktok", "https://vm.tiktok.com/ZMeAbCdEf/"),
    ("tiktok", "https://vt.tiktok.com/ZSjXyZ123/"),
    # YouTube
    ("youtube", "https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
    ("youtube", "https://youtube.com/watch?feature=share&v=dQw4w9WgXcQ&t=42s"),
    ("youtube", "https://m.youtube.com/watch?v=dQw4w9WgXcQ&list=PLx&index=3"),
    ("youtube", "https://youtu.be/dQw4w9WgXcQ?si=Qx8n3lb1gXzAbCdE"),
    ("youtube", "https://www.youtube.com/shorts/aqz-KE-bpKQ"),
    ("youtube", "https://www.youtube.com/live/jfKfPfyJRdk?feature=shared"),
    ("youtube", "https://www.youtube.com/embed/dQw4w9WgXcQ"),
    ("youtube", "https://music.youtube.com/watch?v=dQw4w9WgXcQ&feature=share"),
    ("youtube", "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ?rel=0"),
    ("youtube", "HTTP://WWW.YOUTUBE.COM/watch?v=dQw4w9WgXcQ"),
    # Instagram
    ("instagram", "https://www.instagram.com/p/C1a2B3c4D5e/"),
    ("instagram", "https://www.instagram.com/reel/C8xYz12AbCd/?igsh=MWQ1ZGUxMzBkMA=="),
    ("instagram", "https://instagram.com/reels/C8xYz12AbCd"),
    ("instagram", "https://www.instagram.com/tv/B_8xYz12AbC/"),
    ("instagram", "https://www.instagram.com/natgeo/reel/C8xYz12AbCd/"),
    ("instagram", "https://www.instagram.com/stories/natgeo/3312345678901234567/"),
    # X / Twitter
    ("x", "https://x.com/elonmusk/status/1585341984679469056"),
    ("x", "https://twitter.com/jack/status/20?s=20&t=AbCdEf"),
    ("x", "https://mobile.twitter.com/NASA/status/1585341984679469056/video/1"),
    ("x", "https://x.com/i/status/1585341984679469056"),
    ("x", "https://twitter.com/i/web/status/1585341984679469056"),
    # Vimeo
    ("vimeo", "https://vimeo.com/76979871"),
    ("vimeo", "https://vimeo.com/76979871/8272dbe6a1"),
    ("vimeo", "https://vimeo.com/channels/staffpicks/76979871"),
    ("vimeo", "https://player.vimeo.com/video/76979871?h=8272dbe6a1"),
    ("vimeo", "https://vimeo.com/showcase/7008490/video/76979871"),
    # Facebook
    ("facebook", "https://www.facebook.com/watch/?v=10153231379946729"),
    ("facebook", "https://www.facebook.com/watch?v=10153231379946729&ref=sharing"),
    ("facebook", "https://m.facebook.com/video.php?v=10153231379946729"),
    ("facebook", "https://www.facebook.com/NASA/videos/10153231379946729/"),
    ("facebook", "https://www.facebook.com/reel/1234567890123456"),
    ("facebook", "https://www.facebook.com/share/v/1AbCdEfGh2/?mibextid=wwXIfr"),
    ("facebook", "https://fb.watch/nA1b2C3d4E/"),
    # Reddit
    ("reddit", "https://www.reddit.com/r/videos/comments/1abcde2/some_funny_title/"),
    ("reddit", "https://old.reddit.com/r/videos/comments/1abcde2/"),
    ("reddit", "https://www.reddit.com/r/videos/s/AbCdEf1234"),
    ("reddit", "https://redd.it/1abcde2"),
    ("reddit", "https://v.redd.it/abc123def456"),
    # Twitch clips
    ("twitch", "https://clips.twitch.tv/FunnyClipName-AbC123dEf456"),
    ("twitch", "https://www.twitch.tv/shroud/clip/FunnyClipName-AbC123dEf456"),
    ("twitch", "https://m.twitch.tv/shroud/clip/FunnyClipName-AbC123dEf456?filter=clips"),
    # Dailymotion
    ("dailymotion", "https://www.dailymotion.com/video/x8abcd1"),
    ("dailymotion", "https://dai.ly/x8abcd1"),
    # Snapchat Spotlight
    ("snapchat", "https://www.snapchat.com/spotlight/W7_EDlXWTBiXAEEniNoMPwAAYdWxhY2tmcHVvAY5"),
    # Pinterest
    ("pinterest", "https://www.pinterest.com/pin/1234567890123456/"),
    ("pinterest", "https://www.pinterest.co.uk/pin/1234567890123456/"),
    ("pinterest", "https://pin.it/1AbCdEfGh"),
    # LinkedIn
    ("linkedin", "https://www.linkedin.com/posts/satyanadella_ai-activity-7123456789012345678-AbCd"),
    ("linkedin", "https://www.linkedin.com/feed/update/urn:li:activity:7123456789012345678/"),
    # Threads
    ("threads", "https://www.threads.net/@zuck/post/C8xYz12AbCd"),
    ("threads", "https://www.threads.com/@zuck/post/C8xYz12AbCd?xmt=AQGz"),
    # Bilibili
    ("bilibili", "https://www.bilibili.com/video/BV1GJ411x7h7/"),
    ("bilibili", "https://www.bilibili.com/video/av170001?spm_id_from=333.788"),
    ("bilibili", "https://b23.tv/AbC1dE2"),
    ("bilibili", "https://www.bilibili.tv/en/video/2041863208"),
]

NORMALIZED = [
    ("https://youtu.be/dQw4w9WgXcQ?si=abc&t=42", "https://youtube.com/watch?v=dQw4w9WgXcQ"),
    ("https://www.youtube.com/shorts/aqz-KE-bpKQ?feature=share", "https://youtube.com/watch?v=aqz-KE-bpKQ"),
    ("https://m.youtube.com/watch?v=dQw4w9WgXcQ&list=PL&index=2", "https://youtube.com/watch?v=dQw4w9WgXcQ"),
    ("https://music.youtube.com/watch?v=dQw4w9WgXcQ", "https://youtube.com/watch?v=dQw4w9WgXcQ"),
    ("https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ", "https://youtube.com/watch?v=dQw4w9WgXcQ"),
    ("http://YouTube.com/watch?v=dQw4w9WgXcQ#t=1m", "https://youtube.com/watch?v=dQw4w9WgXcQ"),
    (
        "https://www.tiktok.com/@scout2015/video/6718335390845095173?is_from_webapp=1&sender_device=pc&lang=en",
        "https://tiktok.com/@scout2015/video/6718335390845095173",
    ),
    ("https://mobile.twitter.com/jack/status/20?s=20&t=abc", "https://x.com/jack/status/20"),
    ("https://twitter.com/jack/status/20/", "https://x.com/jack/status/20"),
    ("https://x.com/jack/status/20?utm_source=a&utm_medium=b", "https://x.com/jack/status/20"),
    (
        "https://www.facebook.com/watch/?v=10153231379946729&ref=sharing&fbclid=IwAR0",
        "https://facebook.com/watch?v=10153231379946729",
    ),
    ("https://www.instagram.com/reel/C8xYz12AbCd/?igsh=MWQ1", "https://instagram.com/reel/C8xYz12AbCd"),
    ("https://old.reddit.com/r/videos/comments/1abcde2/t/", "https://reddit.com/r/videos/comments/1abcde2/t"),
    ("https://vm.tiktok.com/ZMeAbCdEf/", "https://vm.tiktok.com/ZMeAbCdEf"),
    (
        "https://www.bilibili.com/video/BV1GJ411x7h7/?spm_id_from=333.1007&vd_source=ab",
        "https://bilibili.com/video/BV1GJ411x7h7",
    ),
    ("  https://vimeo.com/76979871  ", "https://vimeo.com/76979871"),
    # Parameters that are not known trackers stay, sorted (the fake platform's mode rides on one).
    ("https://www.tiktok.com/@u/video/7301?size=100&mode=slow", "https://tiktok.com/@u/video/7301?mode=slow&size=100"),
    ("https://www.threads.com/@zuck/post/C8xYz12AbCd", "https://threads.net/@zuck/post/C8xYz12AbCd"),
]

INVALID = [
    "",
    "   ",
    "not a url",
    "youtube.com/watch?v=dQw4w9WgXcQ",
    "www.tiktok.com/@user/video/1",
    "//www.youtube.com/watch?v=dQw4w9WgXcQ",
    "/watch?v=dQw4w9WgXcQ",
    "ftp://youtube.com/watch?v=dQw4w9WgXcQ",
    "file:///etc/passwd",
    "javascript:alert(1)",
    "data:text/html,<video>",
    "mailto:someone@example.com",
    "https://",
    "https:///watch?v=dQw4w9WgXcQ",
    "https://youtube.com:notaport/watch?v=dQw4w9WgXcQ",
    "https://youtube.com:99999/watch?v=dQw4w9WgXcQ",
    "https://user:secret@youtube.com/watch?v=dQw4w9WgXcQ",
    "https://www.youtube.com/watch?v=dQw4w9WgXcQ\nHost: evil",
    "https://www.you tube.com/watch?v=dQw4w9WgXcQ",
    "https://\x00youtube.com/",
    "https://" + "a" * (MAX_URL_LENGTH + 1) + ".com/",
    "https://www.tiktok.com/@user/video/1?pad=" + "x" * MAX_URL_LENGTH,
    "https://exa$mple.com/video",
    "https://youtube..com/watch?v=dQw4w9WgXcQ",
]

UNSUPPORTED = [
    "https://example.com/video.mp4",
    "http://localhost:8000/watch?v=dQw4w9WgXcQ",
    "http://127.0.0.1/video",
    "http://169.254.169.254/latest/meta-data/",
    "http://[::1]/video",
    "https://youtube.com.evil.example/watch?v=dQw4w9WgXcQ",
    "https://evil.example/https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://notyoutube.com/watch?v=dQw4w9WgXcQ",
    "https://soundcloud.com/artist/track",
    "https://www.youtube.com/",
    "https://www.youtube.com/@mkbhd",
    "https://www.youtube.com/results?search_query=cats",
    "https://www.youtube.com/watch",
    "https://www.youtube.com/watch?v=short",
    "https://www.youtube.com/playlist?list=PLx",
    "https://youtu.be/",
    "https://www.tiktok.com/@scout2015",
    "https://www.tiktok.com/foryou",
    "https://www.instagram.com/natgeo/",
    "https://x.com/elonmusk",
    "https://x.com/home",
    "https://www.twitch.tv/shroud",
    "https://www.twitch.tv/videos/123456789",
    "https://www.facebook.com/watch/?v=notanumber",
    "https://www.facebook.com/NASA",
    "https://www.reddit.com/r/videos/",
    "https://www.snapchat.com/add/someone",
    "https://vimeo.com/about",
    "https://www.youtube.com:8443/watch?v=dQw4w9WgXcQ",
]


@pytest.mark.parametrize(("platform", "url"), SUPPORTED)
def test_supported_links_are_identified(platform: str, url: str) -> None:
    found = identify_platform(url)
    assert found is not None and found.name == platform
    accepted_platform, normalized = validate_submission_url(url)
    assert accepted_platform.name == platform
    assert normalized.startswith("https://")
    assert normalize_media_url(normalized) == normalized, "normalizing twice changes nothing"
    assert identify_platform(normalized) is found


@pytest.mark.parametrize(("url", "expected"), NORMALIZED)
def test_normalized_form(url: str, expected: str) -> None:
    assert normalize_media_url(url) == expected


@pytest.mark.parametrize("url", INVALID)
def test_garbage_is_invalid_url(url: str) -> None:
    with pytest.raises(InvalidUrl) as raised:
        validate_submission_url(url)
    assert raised.value.code == "invalid_url"
    assert identify_platform(url) is None


@pytest.mark.parametrize("url", UNSUPPORTED)
def test_well_formed_but_unknown_is_unsupported_url(url: str) -> None:
    with pytest.raises(UnsupportedUrl) as raised:
        validate_submission_url(url)
    assert raised.value.code == "unsupported_url"
    assert identify_platform(url) is None


@pytest.mark.parametrize("value", [None, 42, b"https://youtu.be/dQw4w9WgXcQ", ["https://youtu.be/dQw4w9WgXcQ"]])
def test_non_strings_are_invalid(value: object) -> None:
    with pytest.raises(InvalidUrl):
        validate_submission_url(value)  # type: ignore[arg-type]


def test_url_at_the_length_limit_is_accepted_and_one_more_is_not() -> None:
    base = "https://www.tiktok.com/@user/video/7301?pad="
    at_limit = base + "x" * (MAX_URL_LENGTH - len(base))
    assert len(at_limit) == MAX_URL_LENGTH
    assert validate_submission_url(at_limit)[0].name == "tiktok"
    with pytest.raises(InvalidUrl):
        validate_submission_url(at_limit + "x")


def test_errors_share_a_base_class_that_is_a_value_error() -> None:
    assert issubclass(InvalidUrl, SubmissionUrlError) and issubclass(UnsupportedUrl, SubmissionUrlError)
    assert issubclass(SubmissionUrlError, DomainError)


def test_every_platform_is_covered_by_a_sample_and_names_are_unique() -> None:
    names = [platform.name for platform in PLATFORMS]
    assert len(names) == len(set(names))
    assert set(names) == {platform for platform, _ in SUPPORTED}
    for name in names:
        platform = platform_by_name(name)
        assert platform is not None and platform.hosts
    assert platform_by_name("soundcloud") is None


def test_same_video_in_every_youtube_shape_has_one_cache_key() -> None:
    shapes = [
        "https://www.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://youtu.be/dQw4w9WgXcQ",
        "https://www.youtube.com/shorts/dQw4w9WgXcQ",
        "https://www.youtube.com/embed/dQw4w9WgXcQ",
        "https://m.youtube.com/watch?v=dQw4w9WgXcQ&t=10",
        "https://music.youtube.com/watch?v=dQw4w9WgXcQ",
        "https://www.youtube-nocookie.com/embed/dQw4w9WgXcQ",
    ]
    assert {normalize_media_url(url) for url in shapes} == {"https://youtube.com/watch?v=dQw4w9WgXcQ"}


def test_whitespace_and_control_characters_are_refused_as_before_for_every_code_point() -> None:
    """The check is `str.isspace()`, a C0 control or DEL, character by character, over all of Unicode."""

    def refused_before(character: str) -> bool:
        return character.isspace() or ord(character) < 0x20 or ord(character) == 0x7F

    characters = [chr(code_point) for code_point in range(0x110000)]
    assert [c for c in characters if bool(_WHITESPACE_OR_CONTROL.search(c)) != refused_before(c)] == []
    for character in filter(refused_before, characters):
        with pytest.raises(InvalidUrl, match="whitespace or control"):
            validate_submission_url(f"https://www.tiktok.com/@user/video/1{character}2")


def test_the_refusal_names_a_known_host_apart_from_an_unknown_one() -> None:
    with pytest.raises(UnsupportedUrl, match=r"^this tiktok\.com link does not point at a single video or post$"):
        validate_submission_url("https://www.tiktok.com/foryou")
    with pytest.raises(UnsupportedUrl, match=r"^links to example\.com are not supported; supported: TikTok, YouTube"):
        validate_submission_url("https://example.com/video.mp4")
    with pytest.raises(UnsupportedUrl, match=r"^links to youtube\.com on port 8443 are not supported$"):
        validate_submission_url("https://www.youtube.com:8443/watch?v=dQw4w9WgXcQ")
