"""Domain errors: every refusal of a command is one of these, with a stable code."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The code of every refusal by the domain or the use cases (`DomainError.code`; the API's `error.code`)."""

    DOMAIN_ERROR = "domain_error"
    INVALID_AMOUNT = "invalid_amount"
    INSUFFICIENT_CREDITS = "insufficient_credits"
    CHARGE_NOT_FOUND = "charge_not_found"
    ALREADY_REFUNDED = "already_refunded"
    INVALID_USER_ID = "invalid_user_id"
    INVALID_TEXT = "invalid_text"
    USER_NOT_FOUND = "user_not_found"
    USER_ALREADY_EXISTS = "user_already_exists"
    TASK_NOT_FOUND = "task_not_found"
    INVALID_SUBMISSION = "invalid_submission"
    INVALID_URL = "invalid_url"
    UNSUPPORTED_URL = "unsupported_url"
    INVALID_OUTPUT_TYPE = "invalid_output_type"
    INVALID_LANGUAGES = "invalid_languages"
    INVALID_MEDIA_OPTIONS = "invalid_media_options"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    INVALID_TRANSITION = "invalid_transition"
    STALE_ATTEMPT = "stale_attempt"
    PROGRESS_BACKWARDS = "progress_backwards"
    INVALID_PROGRESS = "invalid_progress"
    TASK_NOT_RETRYABLE = "task_not_retryable"
    CONCURRENT_UPDATES = "concurrent_updates"


class DomainError(Exception):
    """Base of every refusal by the domain or the application's use cases."""

    code = ErrorCode.DOMAIN_ERROR

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidAmount(DomainError):
    code = ErrorCode.INVALID_AMOUNT


class InsufficientCredits(DomainError):
    code = ErrorCode.INSUFFICIENT_CREDITS


class ChargeNotFound(DomainError):
    code = ErrorCode.CHARGE_NOT_FOUND


class AlreadyRefunded(DomainError):
    code = ErrorCode.ALREADY_REFUNDED


class InvalidUserId(DomainError):
    code = ErrorCode.INVALID_USER_ID


class InvalidText(DomainError):
    """Free text from a user holds a control character or a lone surrogate (see domain/text.py)."""

    code = ErrorCode.INVALID_TEXT


class UserNotFound(DomainError):
    code = ErrorCode.USER_NOT_FOUND


class UserAlreadyExists(DomainError):
    code = ErrorCode.USER_ALREADY_EXISTS


class TaskNotFound(DomainError):
    code = ErrorCode.TASK_NOT_FOUND


class InvalidSubmission(DomainError):
    code = ErrorCode.INVALID_SUBMISSION


class InvalidUrl(InvalidSubmission):
    code = ErrorCode.INVALID_URL


class UnsupportedUrl(InvalidSubmission):
    code = ErrorCode.UNSUPPORTED_URL


class InvalidOutputType(InvalidSubmission):
    code = ErrorCode.INVALID_OUTPUT_TYPE


class InvalidLanguages(InvalidSubmission):
    code = ErrorCode.INVALID_LANGUAGES


class IdempotencyKeyReused(DomainError):
    code = ErrorCode.IDEMPOTENCY_KEY_REUSED


class InvalidTransition(DomainError):
    code = ErrorCode.INVALID_TRANSITION


class StaleAttempt(DomainError):
    code = ErrorCode.STALE_ATTEMPT


class ProgressWentBackwards(DomainError):
    code = ErrorCode.PROGRESS_BACKWARDS


class InvalidProgress(DomainError):
    code = ErrorCode.INVALID_PROGRESS


class TaskNotRetryable(DomainError):
    code = ErrorCode.TASK_NOT_RETRYABLE


class ConcurrentUpdates(DomainError):
    code = ErrorCode.CONCURRENT_UPDATES
