"""Domain errors: every refusal of a command is one of these, with a stable code."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every refusal by the domain or the application's use cases."""

    code = "domain_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidAmount(DomainError):
    code = "invalid_amount"


class InsufficientCredits(DomainError):
    code = "insufficient_credits"


class ChargeNotFound(DomainError):
    code = "charge_not_found"


class AlreadyRefunded(DomainError):
    code = "already_refunded"


class InvalidUserId(DomainError):
    code = "invalid_user_id"


class InvalidText(DomainError):
    """Free text from a user holds a control character or a lone surrogate (see domain/text.py)."""

    code = "invalid_text"


class UserNotFound(DomainError):
    code = "user_not_found"


class UserAlreadyExists(DomainError):
    code = "user_already_exists"


class TaskNotFound(DomainError):
    code = "task_not_found"


class InvalidSubmission(DomainError):
    code = "invalid_submission"


class InvalidUrl(InvalidSubmission):
    code = "invalid_url"


class UnsupportedUrl(InvalidSubmission):
    code = "unsupported_url"


class InvalidOutputType(InvalidSubmission):
    code = "invalid_output_type"


class InvalidLanguages(InvalidSubmission):
    code = "invalid_languages"


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"


class InvalidTransition(DomainError):
    code = "invalid_transition"


class StaleAttempt(DomainError):
    code = "stale_attempt"


class ProgressWentBackwards(DomainError):
    code = "progress_backwards"


class InvalidProgress(DomainError):
    code = "invalid_progress"


class TaskNotRetryable(DomainError):
    code = "task_not_retryable"


class ConcurrentUpdates(DomainError):
    code = "concurrent_updates"
