"""Free text at the edges (domain/text.py) and provider metadata cleaned before events (MediaInfo.cleaned)."""

from __future__ import annotations

import math

import httpx
import pytest

from application.ports.errors import PermanentMediaError
from application.ports.media_provider import MediaInfo, SubtitleSource, VideoSource, is_subtitle_language
from domain.errors import InvalidText
from domain.text import check_free_text, clean_json, clean_text
from infrastructure.providers.http_provider import HttpMediaProvider

DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("text", ["nul\x00", "\x01", "bell\x07", "\x1b[31m", "\x7f", "\ud800", "\udfff x"])
def test_user_text_with_control_characters_is_refused(text: str) -> None:
    with pytest.raises(InvalidText) as refused:
        check_free_text(text, field="reason")
    assert refused.value.code == "invalid_text"
    assert refused.value.details["field"] == "reason"


@pytest.mark.parametrize("text", ["", "plain", "tab\there", "two\nlines", "crlf\r\n", "é 漢字 😛", "\u2028"])
def test_user_text_without_them_passes(text: str) -> None:
    assert check_free_text(text, field="reason") == text


def test_provider_text_is_replaced_not_refused() -> None:
    assert clean_text("a\x00b\x07c\ud800d\te\n") == "a\ufffdb\ufffdc\ufffdd\te\n"
    cleaned = clean_json({"k\x00": ["\x00", 1, 2.5, math.nan, math.inf, None, True, {"x": "\x1b"}]})
    assert cleaned == {"k\ufffd": ["\ufffd", 1, 2.5, None, None, None, True, {"x": "\ufffd"}]}


def test_media_info_cleaned_keeps_only_storable_text_forwardable_headers_and_language_tags() -> None:
    info = MediaInfo(
        platform="tiktok",
        media_id="1\x00",
        title="t\x00itle",
        uploader="u\x1b",
        video=VideoSource(
            "https://cdn.example/v.mp4",
            headers={
                "Host": "evil",
                "Cookie": "s=1",
                "Connection": "close",
                "Transfer-Encoding": "chunked",
                "Authorization": "Bearer x",
                "User-Agent": "ua",
                "Referer": "https://a/\r\nX-Injected: 1",
                "Origin": "https://a",
                "Accept-Language": "x" * 2000,
            },
        ),
        subtitles=(
            SubtitleSource("../x", "vtt", "https://s/1"),
            SubtitleSource("en\r\nX: 1", "vtt", "https://s/2"),
            SubtitleSource("pt-BR", "vtt", "https://s/3", name="Portugu\x00s"),
            SubtitleSource("es-419", "srt", "https://s/4"),
        ),
    )
    cleaned = info.cleaned()
    assert (cleaned.title, cleaned.uploader, cleaned.media_id) == ("t\ufffditle", "u\ufffd", "1\ufffd")
    assert cleaned.video is not None and cleaned.video.headers == {"User-Agent": "ua", "Origin": "https://a"}
    assert [(t.lang, t.name) for t in cleaned.subtitles] == [("pt-BR", "Portugu\ufffds"), ("es-419", None)]


@pytest.mark.parametrize("lang", ["en", "pt-BR", "zh-Hans", "es-419", "en_US", "sr-Latn-RS"])
def test_language_tags_pass(lang: str) -> None:
    assert is_subtitle_language(lang)


@pytest.mark.parametrize("lang", ["", "../x", "en\r\nX: 1", "a/b", "en ", "x" * 9, "é"])
def test_other_languages_do_not(lang: str) -> None:
    assert not is_subtitle_language(lang)


@pytest.mark.parametrize("status", [404, 410])
def test_a_deeply_nested_error_body_is_still_not_found(status: int) -> None:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=DEEP))
    provider = HttpMediaProvider("https://provider.example/", "k", "h", client=httpx.Client(transport=transport))
    with pytest.raises(PermanentMediaError) as raised:
        provider.fetch_metadata("https://www.tiktok.com/@a/video/1")
    assert raised.value.code == "media_not_found"
