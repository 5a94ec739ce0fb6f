"""The one place where errors become HTTP responses: {"error": {"code", "message", "details"}}."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from domain.errors import DomainError, ErrorCode
from infrastructure.postgres.store_connections import STORE_ERRORS, discard_broken_connections_soon

logger = logging.getLogger(__name__)

# Every DomainError's code → its HTTP status (tests/unit/test_error_map.py checks none is missing).
DOMAIN_STATUS = {
    ErrorCode.DOMAIN_ERROR: 422,
    ErrorCode.INVALID_AMOUNT: 422,
    ErrorCode.INSUFFICIENT_CREDITS: 402,
    ErrorCode.CHARGE_NOT_FOUND: 422,
    ErrorCode.ALREADY_REFUNDED: 422,
    ErrorCode.INVALID_USER_ID: 422,
    ErrorCode.INVALID_TEXT: 422,
    ErrorCode.USER_NOT_FOUND: 404,
    ErrorCode.USER_ALREADY_EXISTS: 409,
    ErrorCode.TASK_NOT_FOUND: 404,
    ErrorCode.INVALID_SUBMISSION: 422,
    ErrorCode.INVALID_URL: 422,
    ErrorCode.UNSUPPORTED_URL: 422,
    ErrorCode.INVALID_OUTPUT_TYPE: 422,
    ErrorCode.INVALID_LANGUAGES: 422,
    ErrorCode.INVALID_MEDIA_OPTIONS: 422,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 409,
    ErrorCode.INVALID_TRANSITION: 409,
    ErrorCode.STALE_ATTEMPT: 409,
    ErrorCode.PROGRESS_BACKWARDS: 409,
    ErrorCode.INVALID_PROGRESS: 422,
    ErrorCode.TASK_NOT_RETRYABLE: 409,
    ErrorCode.CONCURRENT_UPDATES: 503,
}
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "validation_failed",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}
STORE_UNAVAILABLE = "store_unavailable"
DEFAULT_STORE_RETRY_AFTER = 2


class ErrorDetail(BaseModel):
    code: str
    message: str
    details: Any = None


class ErrorBody(BaseModel):
    error: ErrorDetail


class ApiError(Exception):
    """An HTTP-level refusal raised by a route or dependency."""

    def __init__(
        self, status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details, self.headers = status, code, message, details, headers


def error_response(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, details=details))
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations of the error responses a route can give."""
    descriptions = {
        401: "Missing or invalid credentials",
        402: "Not enough credits",
        404: "No such resource (or not yours)",
        409: "Conflicts with the current state",
        413: "Request body too large",
        416: "The range is outside the video",
        422: "Invalid request",
        503: "Temporarily unavailable; retry after Retry-After seconds",
    }
    return {s: {"model": ErrorBody, "description": descriptions.get(s, HTTP_CODES.get(s, ""))} for s in statuses}


def install_error_handlers(api: FastAPI) -> None:
    @api.exception_handler(DomainError)
    async def domain_error(_: Request, e: DomainError) -> JSONResponse:
        status = DOMAIN_STATUS.get(e.code, 422)
        headers = {"Retry-After": "1"} if status == 503 else None
        return error_response(status, e.code, e.message, e.details or None, headers)

    @api.exception_handler(ApiError)
    async def api_error(_: Request, e: ApiError) -> JSONResponse:
        return error_response(e.status, e.code, e.message, e.details, e.headers)

    async def store_error(request: Request, e: Exception) -> JSONResponse:
        """Any database error: the store is unavailable for now (never a 500); its broken connections go."""
        runtime = getattr(request.app.state, "runtime", None)
        logger.warning(
            "database error on %s %s: %s: %s",
            request.method,
            request.url.path,
            type(e).__name__,
            str(e).splitlines()[0][:200] if str(e) else "",
            extra={"error_type": type(e).__name__},
        )
        retry_after = DEFAULT_STORE_RETRY_AFTER
        if runtime is not None:
            retry_after = getattr(runtime.settings, "store_retry_after_seconds", retry_after)
            views = getattr(runtime, "views", None)  # as last known: reading the pointer here would block the loop
            discard_broken_connections_soon(
                runtime.app.recorder.datastore, *([views.known().datastore] if hasattr(views, "known") else [])
            )
        return error_response(
            503,
            STORE_UNAVAILABLE,
            "The database is not answering; try again shortly.",
            None,
            {"Retry-After": str(retry_after)},
        )

    for error_class in STORE_ERRORS:
        api.add_exception_handler(error_class, store_error)

    @api.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError) -> JSONResponse:
        details = [
            {"loc": list(err.get("loc", ())), "message": err.get("msg", ""), "type": err.get("type", "")}
            for err in e.errors()
        ]
        return error_response(422, "validation_failed", "The request is not valid.", details)

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException) -> JSONResponse:
        if e.status_code == 400:  # FastAPI's "error parsing the body": undecodable bytes
            return error_response(422, "validation_failed", "The request body is not valid JSON in UTF-8.")
        code = HTTP_CODES.get(e.status_code, "http_error")
        message = e.detail if isinstance(e.detail, str) else code.replace("_", " ")
        return error_response(e.status_code, code, message, None, getattr(e, "headers", None))

    @api.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "Something went wrong on our side.")
