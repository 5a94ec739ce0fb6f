"""The fast path of POST /v1/tasks takes only what FastAPI's route would accept, and leaves the OpenAPI
document as the route makes it."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from fastapi import FastAPI, Header
from fastapi.dependencies.utils import request_params_to_args
from fastapi.routing import APIRoute
from starlette.datastructures import Headers

from infrastructure.api import submission_fast_path as fast_path
from infrastructure.api.app import submissions_route
from infrastructure.api.routes import tasks
from infrastructure.api.schemas import SubmitTask
from infrastructure.api.submission_fast_path import RouteHeader, SubmissionFastPath

BODY = b'{"url": "https://www.tiktok.com/@scout2015/video/6718335390845095173", "output_type": "subtitles"}'
JSON = (b"content-type", b"application/json")
IDEMPOTENCY_KEY = RouteHeader(submissions_route())


def accepted_submission(
    headers: list[tuple[bytes, bytes]], body: bytes, idempotency_key: RouteHeader = IDEMPOTENCY_KEY
) -> Any:
    return fast_path.accepted_submission(headers, body, idempotency_key)


def openapi(fast_path: bool) -> str:
    api = FastAPI(title="mediatasks", version="1")
    api.include_router(tasks.submissions)
    api.include_router(tasks.router)
    if fast_path:
        api.router.routes.insert(0, SubmissionFastPath(api.router, submissions_route()))
    return json.dumps(api.openapi(), sort_keys=True)


def test_the_openapi_document_is_the_same_with_the_fast_path() -> None:
    assert openapi(fast_path=True) == openapi(fast_path=False)


def test_a_valid_submission_is_taken_with_its_key() -> None:
    taken = accepted_submission([JSON, (b"idempotency-key", b"key-1")], BODY)
    assert taken is not None
    submission, key = taken
    assert submission == SubmitTask.model_validate(json.loads(BODY))
    assert key == "key-1"
    assert accepted_submission([(b"content-type", b"Application/JSON")], BODY) is not None
    for charset in (b"application/json; charset=utf-8", b"application/json;charset=UTF-8"):
        assert accepted_submission([(b"content-type", charset)], BODY) is not None


@pytest.mark.parametrize(
    ("headers", "body"),
    [
        ([], BODY),  # no content type: FastAPI's own rules
        ([(b"content-type", b"application/json; charset=latin-1")], BODY),
        ([(b"content-type", b"application/json; boundary=x")], BODY),
        ([(b"content-type", b"text/plain")], BODY),
        ([JSON, JSON], BODY),
        ([JSON, (b"idempotency-key", b"a"), (b"idempotency-key", b"b")], BODY),
        ([JSON, (b"idempotency-key", b"")], BODY),
        ([JSON, (b"idempotency-key", b"a b")], BODY),
        ([JSON, (b"idempotency-key", b"x" * 256)], BODY),
        ([JSON, (b"idempotency-key", "é".encode())], BODY),
        ([JSON], b""),
        ([JSON], b"[]"),
        ([JSON], b'{"url": '),
        ([JSON], b'{"url": "https://x.test/v", "output_type": "subtitles", "extra": 1}'),
        ([JSON], b'{"url": "https://x.test/v", "output_type": "subtitles", "max_height": 1e400}'),
        ([JSON], b'{"url": "https://x.test/v", "output_type": "subtitles", "max_height": 123456789012345678901234}'),
    ],
)
def test_anything_else_goes_to_fastapi(headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    assert accepted_submission(headers, body) is None


KEYS = {
    "none": [],
    "empty": [b""],
    "one": [b"k"],
    "255": [b"k" * 255],
    "256": [b"k" * 256],
    "space": [b"a b"],
    "edge spaces": [b" key "],
    "tab": [b"a\tb"],
    "tilde and bang": [b"!~"],
    "del": [b"a\x7f"],
    "non-ascii utf-8": ["é".encode()],
    "non-ascii latin-1": ["é".encode("latin-1")],
    "two": [b"a", b"b"],
    "two, one bad": [b"a", b"a b"],
}


@pytest.mark.parametrize("keys", KEYS.values(), ids=KEYS.keys())
def test_the_fast_path_takes_a_key_only_as_fastapi_reads_it(keys: list[bytes]) -> None:
    route = submissions_route()
    sent = [(b"idempotency-key", key) for key in keys]
    values, errors = request_params_to_args(route.dependant.header_params, Headers(raw=[JSON, *sent]))
    taken = accepted_submission([JSON, *sent], BODY)
    if errors or len(keys) > 1:  # FastAPI's 422, or two keys: left to FastAPI (which reads the first)
        assert taken is None
    else:
        assert taken is not None and taken[1] == values["idempotency_key"]
    assert bool(errors) == (keys not in ([], [b"k"], [b"k" * 255], [b"!~"], [b"a", b"b"], [b"a", b"a b"]))


ShortKey = Annotated[str | None, Header(alias="X-Short-Key", max_length=4, pattern="^[a-z]+$")]


async def short_keys(key: ShortKey = None) -> None:
    """A route declaring another key: what the fast path takes follows the declaration."""


async def required_key(key: Annotated[str, Header(alias="X-Key")]) -> None:
    """A route whose key is required."""


def test_the_fast_path_takes_what_the_route_declares() -> None:
    short = RouteHeader(APIRoute("/v1/short", short_keys, methods=["POST"]))
    assert short.name == b"x-short-key"
    assert accepted_submission([JSON, (b"x-short-key", b"abcd")], BODY, short)[1] == "abcd"
    for refused in (b"abcde", b"ABC", b"k1"):
        assert accepted_submission([JSON, (b"x-short-key", refused)], BODY, short) is None
    assert accepted_submission([JSON, (b"idempotency-key", b"abcde")], BODY, short)[1] is None  # not its header
    required = RouteHeader(APIRoute("/v1/required", required_key, methods=["POST"]))
    assert accepted_submission([JSON], BODY, required) is None
    assert accepted_submission([JSON, (b"x-key", b"anything at all")], BODY, required)[1] == "anything at all"


async def two_headers(
    key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    other: Annotated[str | None, Header()] = None,
) -> None:
    """A route with a second header: the fast path would not read it."""


def test_a_route_with_another_header_is_refused_by_the_fast_path() -> None:
    with pytest.raises(ValueError, match="one header parameter"):
        RouteHeader(APIRoute("/v1/two", two_headers, methods=["POST"]))
