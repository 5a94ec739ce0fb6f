"""The fast path of POST /v1/tasks takes only what FastAPI's route would accept, and leaves the OpenAPI
document as the route makes it."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI

from infrastructure.api.app import submissions_route
from infrastructure.api.routes import tasks
from infrastructure.api.schemas import SubmitTask
from infrastructure.api.submission_fast_path import SubmissionFastPath, accepted_submission

BODY = b'{"url": "https://www.tiktok.com/@scout2015/video/6718335390845095173", "output_type": "subtitles"}'
JSON = (b"content-type", b"application/json")


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
