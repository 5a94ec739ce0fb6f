"""The error every subtitle parser raises for data it cannot read."""

from __future__ import annotations

from application.ports.errors import PermanentMediaError


def unreadable_subtitles(message: str) -> PermanentMediaError:
    """A permanent `unsupported_content` error: retrying the same bytes cannot help."""
    return PermanentMediaError("unsupported_content", message)
