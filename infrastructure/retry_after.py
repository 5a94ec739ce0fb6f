"""The one Retry-After parser: of a provider, a download, QStash (its answers and its timeouts)."""

from __future__ import annotations

import email.utils
import math
import re
import time
from datetime import timezone

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_DURATION = re.compile(f"(?:{_DURATION_PART.pattern})+")
_DURATION_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` value, never negative; None when it says nothing usable.

    Accepts delta-seconds (`120`, `1.5`), an HTTP date (a date without a zone is UTC) and a Go-style
    duration as QStash writes them (`6m5s`). `now` is a Unix time (default: the clock).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    if _DURATION.fullmatch(text):
        return sum(float(amount) * _DURATION_UNIT_SECONDS[unit] for amount, unit in _DURATION_PART.findall(text))
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))
