"""The webhook event types (the `type` of a delivery's body), in one place for the API, fan-out and client."""

from __future__ import annotations

from typing import Literal, get_args

EventType = Literal[
    "task.extracted", "task.failed", "task.retrying", "task.progress", "account.refunded", "account.credited"
]
EVENT_TYPES: tuple[str, ...] = get_args(EventType)
DEFAULT_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t != "task.progress")  # progress is opt-in
