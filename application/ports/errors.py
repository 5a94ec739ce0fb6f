"""Errors raised by adapters behind the ports, classified for the pipeline.

A permanent error fails the task (and a refund follows); a transient one is retried
until the attempts run out.
"""

from __future__ import annotations

from typing import Any


class MediaError(Exception):
    """A classified failure of an adapter: a stable code, a message for people, and whether to retry."""

    retryable: bool = False

    def __init__(self, code: str, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


class PermanentMediaError(MediaError):
    """Retrying cannot help: bad or unsupported URL, media gone or private, too large, blocked."""

    retryable = False


class TransientMediaError(MediaError):
    """Retrying may help: timeouts, HTTP 429 and 5xx, connection resets, storage hiccups."""

    retryable = True

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retry_after: float | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(code, message, details=details)
        self.retry_after = retry_after
