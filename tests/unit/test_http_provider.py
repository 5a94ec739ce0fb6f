"""HttpMediaProvider's mapping of answers to MediaInfo and errors (httpx's in-memory transport, no sockets)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from application.ports.errors import PermanentMediaError, TransientMediaError
from infrastructure.providers.http_provider import MAX_RESPONSE_BYTES, HttpMediaProvider

MEDIA_URL = "https://www.tiktok.com/@user/video/7301"


def provider_answering(status: int, body: Any = None, headers: dict[str, str] | None = None) -> HttpMediaProvider:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content, headers=headers))
    return HttpMediaProvider("https://provider.example/", "k", "h", client=httpx.Client(transport=transport))


def test_request_shape() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "7301", "title": "t"})

    provider = HttpMediaProvider(
        "https://provider.example/base/", "key-1", "host-1", client=httpx.Client(transport=httpx.MockTransport(answer))
    )
    info = provider.fetch_metadata(MEDIA_URL + "?a=1&b=2")
    request = seen[0]
    assert request.url.path == "/base/v1/media"
    assert request.url.params["url"] == MEDIA_URL + "?a=1&b=2"
    assert b"url=https%3A%2F%2Fwww.tiktok.com%2F%40user%2Fvideo%2F7301%3Fa%3D1%26b%3D2" in request.url.raw_path
    assert request.headers["X-RapidAPI-Key"] == "key-1" and request.headers["X-RapidAPI-Host"] == "host-1"
    assert info.platform == "tiktok", "taken from the URL when the answer does not say"
    assert info.video is None and info.subtitles == ()


def test_unknown_subtitle_formats_are_skipped_and_noted() -> None:
    body = {
        "platform": "x",
        "id": 20,
        "subtitles": [
            {"lang": "en", "format": "ass", "url": "https://cdn/en.ass"},
            {"lang": "en", "format": "srt", "url": "https://cdn/en.srt", "kind": "auto"},
        ],
    }
    info = provider_answering(200, body).fetch_metadata(MEDIA_URL)
    assert info.media_id == "20"
    assert [(track.format, track.kind) for track in info.subtitles] == [("srt", "asr")]
    assert info.extra["skipped_subtitle_formats"] == ["ass"]


@pytest.mark.parametrize(
    "body",
    [
        {"id": 1, "video": {"url": "file:///etc/passwd"}},
        {"id": 1, "video": {"url": "https://cdn/v.mp4", "size": -1}},
        {"id": 1, "subtitles": [{"lang": "en", "format": "vtt", "url": "ftp://cdn/en.vtt"}]},
        {"title": "no id"},
        ["not", "an", "object"],
        b"",
        b"<html>",
    ],
)
def test_answers_outside_the_contract_are_permanent_bad_responses(body: Any) -> None:
    with pytest.raises(PermanentMediaError) as raised:
        provider_answering(200, body).fetch_metadata(MEDIA_URL)
    assert raised.value.code == "provider_bad_response"


def test_declared_oversize_body_is_refused() -> None:
    provider = provider_answering(200, b"{}", headers={"Content-Length": str(MAX_RESPONSE_BYTES + 1)})
    with pytest.raises(PermanentMediaError) as raised:
        provider.fetch_metadata(MEDIA_URL)
    assert raised.value.code == "provider_bad_response"


@pytest.mark.parametrize(
    ("status", "body", "error_type", "code"),
    [
        (404, {}, PermanentMediaError, "media_not_found"),
        (410, {}, PermanentMediaError, "media_not_found"),
        (401, {}, PermanentMediaError, "provider_auth"),
        (403, {"error": {"code": "forbidden"}}, PermanentMediaError, "provider_auth"),
        (403, {"error": {"code": "media_private"}}, PermanentMediaError, "media_private"),
        (404, {"error": {"code": "unsupported_url"}}, PermanentMediaError, "unsupported_url"),
        (400, b"bad", PermanentMediaError, "unsupported_url"),
        (422, {}, PermanentMediaError, "unsupported_url"),
        (429, {"error": {"code": "media_private"}}, TransientMediaError, "rate_limited"),
        (500, {}, TransientMediaError, "provider_unavailable"),
        (502, b"<html>", TransientMediaError, "provider_unavailable"),
        (503, {"error": {"code": "media_not_found"}}, TransientMediaError, "provider_unavailable"),
        (302, {}, TransientMediaError, "provider_bad_response"),
        (204, {}, TransientMediaError, "provider_bad_response"),
    ],
)
def test_status_mapping(status: int, body: Any, error_type: type[Exception], code: str) -> None:
    with pytest.raises(error_type) as raised:
        provider_answering(status, body).fetch_metadata(MEDIA_URL)
    assert raised.value.code == code  # type: ignore[attr-defined]


def test_503_retry_after_is_passed_on() -> None:
    with pytest.raises(TransientMediaError) as raised:
        provider_answering(503, {}, headers={"Retry-After": "30"}).fetch_metadata(MEDIA_URL)
    assert raised.value.retry_after == 30.0
