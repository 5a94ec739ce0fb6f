"""Request limits: the body size's error (enforced by infrastructure/api/edge.py), failed authentications."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque

from starlette.exceptions import HTTPException

from infrastructure.api.errors import ApiError


class BodyTooLarge(HTTPException):
    """Raised while reading the body; FastAPI passes HTTPExceptions through to the error handlers."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"The request body may be at most {max_bytes} bytes.")


class FailedAuthentications:
    """Failed authentications per client address over the last minute: past the cap, refused with 429
    before any lookup; each failure is answered only after a short delay (the event loop goes on)."""

    WINDOW_SECONDS = 60.0
    MAX_ADDRESSES = 100_000

    def __init__(self, per_minute: int, delay_seconds: float) -> None:
        self.per_minute = per_minute
        self.delay_seconds = delay_seconds
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def refuse_if_over(self, address: str) -> None:
        """Raise a 429 ApiError while `address` has failed `per_minute` times in the last minute."""
        recent = self._recent(address, time.monotonic())
        if recent is not None and len(recent) >= self.per_minute:
            retry_after = max(1, math.ceil(recent[0] + self.WINDOW_SECONDS - time.monotonic()))
            raise ApiError(
                429,
                "too_many_failed_authentications",
                f"Too many failed authentications from this address; retry after {retry_after} s.",
                {"retry_after": retry_after},
                headers={"Retry-After": str(retry_after)},
            )

    async def record(self, address: str) -> None:
        now = time.monotonic()
        recent = self._recent(address, now)
        if recent is None:
            recent = self._failures[address] = deque()
            if len(self._failures) > self.MAX_ADDRESSES:
                self._failures.popitem(last=False)
        recent.append(now)
        self._failures.move_to_end(address)
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)

    def _recent(self, address: str, now: float) -> deque[float] | None:
        recent = self._failures.get(address)
        if recent is None:
            return None
        while recent and recent[0] <= now - self.WINDOW_SECONDS:
            recent.popleft()
        return recent
