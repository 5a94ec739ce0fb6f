"""The one poll-with-backoff: ask until there is an answer, sleeping a little longer each time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def poll(check: Callable[[], T], timeout: float, *, first_delay: float = 0.002, max_delay: float = 0.1) -> T:
    """Call `check` until its answer is truthy or `timeout` seconds have passed; its last answer.

    Sleeps `first_delay`, doubling up to `max_delay`, between calls (a read-your-writes wait is over
    in milliseconds when the projection is quick, without hammering the store when it is not).
    """
    deadline = time.monotonic() + timeout
    delay = first_delay
    while True:
        answer = check()
        if answer or time.monotonic() >= deadline:
            return answer
        time.sleep(delay)
        delay = min(delay * 2, max_delay)
