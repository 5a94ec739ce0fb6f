"""Values per user (or per key) kept in memory and read again in the background before they expire.

`ReadAhead` keeps each value with the time it is trusted until, and hands out one claim at a time on
reading it again from `ahead` seconds before that (a caller that keeps asking never waits for the read);
`QueuedReads` runs those reads one after another in one thread-pool job.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

MAX_CACHED = 10_000  # more values than this: all are dropped (read again when asked for)
V = TypeVar("V")


class RefreshClaim:
    """One claim on reading a user's value afresh in the background; `counted`: what was added meanwhile."""

    __slots__ = ("counted",)

    def __init__(self) -> None:
        self.counted = 0


class ReadAhead(Generic[V]):
    """A value per user, trusted `fresh_for` seconds, and read again in the background from `ahead` seconds
    before it expires: one claim per user at a time (`due`), settled by `refresh`, which keeps the fresh
    value (`settle` adds what was counted meanwhile) unless `forget` came first."""

    def __init__(
        self,
        read: Callable[[str], V],
        fresh_for: float,
        ahead: float,
        settle: Callable[[V, int], V] = lambda found, counted: found,
    ) -> None:
        self._read, self._fresh_for, self._ahead, self._settle = read, fresh_for, ahead, settle
        self._values: dict[str, tuple[V, float]] = {}  # user → (value, trusted until)
        self._claims: dict[str, RefreshClaim] = {}  # user → the background read under way
        self._lock = threading.Lock()

    def known(self, user_id: str) -> tuple[V, float] | None:
        """The value and the monotonic time it is trusted until (None: never read or forgotten)."""
        with self._lock:
            return self._values.get(user_id)

    def fresh(self, user_id: str) -> V | None:
        known = self.known(user_id)
        return known[0] if known is not None and known[1] > time.monotonic() else None

    def put(self, user_id: str, value: V, until: float | None = None, *, counted: int = 0) -> None:
        """Keep `value` (until `fresh_for` from now by default); `counted` is added to a claim under way,
        whose read may not see it."""
        with self._lock:
            self._keep(user_id, value, time.monotonic() + self._fresh_for if until is None else until)
            claim = self._claims.get(user_id)
            if claim is not None:
                claim.counted += counted

    def put_if_unknown(self, user_id: str, value: V, until: float) -> None:
        """Keep `value` until `until` unless a value is known already (it may be newer than this one)."""
        with self._lock:
            if user_id not in self._values:
                self._keep(user_id, value, until)

    def _keep(self, user_id: str, value: V, until: float) -> None:
        """Under the lock: keep `value` until `until` (all values dropped first when more than MAX_CACHED)."""
        if len(self._values) > MAX_CACHED:
            self._values.clear()
        self._values[user_id] = (value, until)

    def due(self, user_id: str) -> RefreshClaim | None:
        """A claim on reading the user's value again (`refresh`) when it is known, expires within `ahead`
        seconds and nobody reads it yet; else None."""
        with self._lock:
            known = self._values.get(user_id)
            if known is None or known[1] - time.monotonic() > self._ahead or user_id in self._claims:
                return None
            claim = self._claims[user_id] = RefreshClaim()
            return claim

    def refresh(self, user_id: str, claim: RefreshClaim) -> None:
        """Read the user's value afresh (in the background: no request waits for it) and keep it while
        `claim` is still the user's."""
        started = time.monotonic()  # trusted from the read's start: a change made during it is not missed
        try:
            found = self._read(user_id)
        finally:
            with self._lock:
                still_ours = self._claims.get(user_id) is claim
                if still_ours:
                    del self._claims[user_id]
        if still_ours:
            with self._lock:
                self._values[user_id] = (self._settle(found, claim.counted), started + self._fresh_for)

    def forget(self, user_id: str) -> None:
        """Drop the user's value and any read under way (it may have the old value)."""
        with self._lock:
            self._values.pop(user_id, None)
            self._claims.pop(user_id, None)


def read_in_background(reads: QueuedReads, read: Callable[[], None]) -> None:
    if reads.add(read):
        asyncio.get_running_loop().run_in_executor(None, reads.run)


class QueuedReads:
    """Background reads, run one after another by one job in the thread pool: a request that asks for one
    while the job runs only queues it (one thread hop per round of reads, not one per read)."""

    def __init__(self) -> None:
        self._queue: deque[Callable[[], None]] = deque()
        self._running = False
        self._lock = threading.Lock()

    def add(self, read: Callable[[], None]) -> bool:
        """Queue `read`; True when the caller is to start `run` in the thread pool (no job runs now)."""
        with self._lock:
            self._queue.append(read)
            if self._running:
                return False
            self._running = True
            return True

    def run(self) -> None:
        """Run the queued reads until none is left; a failed read is logged and the next one runs."""
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                read = self._queue.popleft()
            try:
                read()
            except Exception as error:  # noqa: BLE001 - a background read must not stop the others
                logger.warning("a value not read afresh: %s", error)
