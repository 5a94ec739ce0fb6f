"""One supervisor for every long-running follower of a process.

A follower is anything that follows the event log (or sweeps a view) until told to stop:

    class MyFollower:
        name = "my-follower"                      # unique in the process; the metric's attribute

        def run(self, stopping: threading.Event) -> None:
            '''Follow from the tracked position until `stopping` is set; raise on any error.'''

        def position(self) -> int | None:         # optional; in memory, no I/O
            '''The last notification id handled (None before the first).'''

`Supervisor.add(follower)` runs `follower.run(stopping)` in a thread of its own. When `run` raises
(or returns without being stopped), the error is logged with its cause, counted in the metric
`mediatasks.follower.restarts` (attribute `follower`), and `run` is called again after a capped,
jittered exponential backoff, for as long as the process lives. Each call of `run` must therefore
resume from the follower's tracking position (or its last position in memory), never from the head.
`Supervisor.statuses()` tells /readyz what each follower is doing: running or restarting (since
when), how often it was restarted, its last error, and its position and when that last moved.

`subscription_stopped_by(stopping, subscription)` ends a blocking event-log subscription when
`stopping` is set, for followers that iterate one.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 5.0
HEALTHY_RUN_SECONDS = 30.0  # a run that lasted this long resets the backoff
PROGRESS_SAMPLE_SECONDS = 0.5

follower_restarts = metrics.get_meter(__name__).create_counter(
    "mediatasks.follower.restarts",
    unit="{restart}",
    description="Times a follower failed and was started again, by follower",
)


class Follower(Protocol):
    """Follows until `stopping` is set; raises on error (the supervisor calls `run` again)."""

    name: str

    def run(self, stopping: threading.Event) -> None: ...


@dataclass(frozen=True)
class FollowerStatus:
    """One follower as /readyz shows it (times are wall-clock seconds since the epoch)."""

    name: str
    state: str  # running | restarting | stopped
    since: float
    restarts: int
    last_error: str | None
    position: int | None
    progressed_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "since": self.since,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "position": self.position,
            "progressed_at": self.progressed_at,
        }


def backoff_delay(failures: int, base: float, cap: float) -> float:
    """Exponential in the consecutive failures, capped, with jitter (half to all of it)."""
    delay = min(cap, base * 2 ** max(failures - 1, 0))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not secrecy


class _Supervised:
    def __init__(self, follower: Any) -> None:
        self.follower = follower
        self.name: str = follower.name
        self.stopping = threading.Event()
        self.state = "running"
        self.since = time.time()
        self.restarts = 0
        self.last_error: str | None = None
        self.position: int | None = None
        self.progressed_at: float | None = None
        self.thread: threading.Thread | None = None

    def sample_progress(self) -> None:
        read = getattr(self.follower, "position", None)
        position = read() if callable(read) else None
        if position is not None and position != self.position:
            self.position, self.progressed_at = position, time.time()

    def status(self) -> FollowerStatus:
        self.sample_progress()
        return FollowerStatus(
            self.name, self.state, self.since, self.restarts, self.last_error, self.position, self.progressed_at
        )


class Supervisor:
    """Runs followers, each in its own thread, and restarts each one after it fails."""

    def __init__(
        self, *, backoff_base_seconds: float = BACKOFF_BASE_SECONDS, backoff_cap_seconds: float = BACKOFF_CAP_SECONDS
    ) -> None:
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._lock = threading.Lock()
        self._followers: dict[str, _Supervised] = {}
        self._stopped = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="supervisor-progress", daemon=True)
        self._sampler.start()

    def add(self, follower: Any) -> None:
        """Start supervising `follower` (its `name` must be unique among those supervised)."""
        supervised = _Supervised(follower)
        with self._lock:
            if self._stopped.is_set():
                raise RuntimeError("the supervisor has stopped")
            if supervised.name in self._followers:
                raise ValueError(f"a follower named {supervised.name!r} is supervised already")
            self._followers[supervised.name] = supervised
        supervised.thread = threading.Thread(
            target=self._keep_running, args=(supervised,), name=f"follower-{supervised.name}", daemon=True
        )
        supervised.thread.start()

    def remove(self, name: str, timeout: float = 10.0) -> None:
        """Stop one follower and wait (up to `timeout`) for its thread to end."""
        with self._lock:
            supervised = self._followers.pop(name, None)
        if supervised is not None:
            self._stop(supervised, timeout)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every follower (each is given up to `timeout` to end)."""
        self._stopped.set()
        with self._lock:
            followers = list(self._followers.values())
            self._followers.clear()
        for supervised in followers:
            supervised.stopping.set()
        for supervised in followers:
            self._stop(supervised, timeout)

    def statuses(self) -> list[FollowerStatus]:
        with self._lock:
            followers = list(self._followers.values())
        return [supervised.status() for supervised in followers]

    def names(self) -> list[str]:
        with self._lock:
            return list(self._followers)

    def _stop(self, supervised: _Supervised, timeout: float) -> None:
        supervised.stopping.set()
        if supervised.thread is not None and supervised.thread is not threading.current_thread():
            supervised.thread.join(timeout)
            if supervised.thread.is_alive():
                logger.warning("follower did not stop in time", extra={"follower": supervised.name})
        supervised.state, supervised.since = "stopped", time.time()

    def _keep_running(self, supervised: _Supervised) -> None:
        failures = 0
        stopping = supervised.stopping
        while not stopping.is_set():
            started = time.monotonic()
            supervised.state, supervised.since = "running", time.time()
            try:
                supervised.follower.run(stopping)
                error: BaseException = RuntimeError("returned without being asked to stop")
            except BaseException as raised:  # noqa: BLE001 - every failure is restarted
                error = raised
            if stopping.is_set():
                break
            failures = 1 if time.monotonic() - started >= HEALTHY_RUN_SECONDS else failures + 1
            delay = backoff_delay(failures, self.backoff_base_seconds, self.backoff_cap_seconds)
            supervised.restarts += 1
            supervised.last_error = _describe(error)
            supervised.state, supervised.since = "restarting", time.time()
            supervised.sample_progress()
            follower_restarts.add(1, {"follower": supervised.name})
            logger.error(
                "follower failed; restarting it from its position",
                exc_info=error,
                extra={
                    "follower": supervised.name,
                    "error": supervised.last_error,
                    "restarts": supervised.restarts,
                    "backoff_seconds": round(delay, 3),
                    "position": supervised.position,
                },
            )
            stopping.wait(delay)

    def _sample(self) -> None:
        while not self._stopped.wait(PROGRESS_SAMPLE_SECONDS):
            with self._lock:
                followers = list(self._followers.values())
            for supervised in followers:
                try:
                    supervised.sample_progress()
                except Exception:  # noqa: BLE001 - a position is only informative
                    logger.debug("could not read a follower's position", exc_info=True)


class Supervised:
    """A component's followers on the process's supervisor, or (none given) on a supervisor of their own."""

    def __init__(self) -> None:
        self.supervisor: Supervisor | None = None
        self._owned = False
        self._names: list[str] = []

    def start(self, supervisor: Supervisor | None, *followers: Any, **options: Any) -> None:
        self._owned = supervisor is None
        self.supervisor = supervisor or Supervisor(**options)
        for follower in followers:
            self.supervisor.add(follower)
            self._names.append(follower.name)

    def stop(self) -> None:
        if self.supervisor is None:
            return
        if self._owned:
            self.supervisor.stop()
        else:
            for name in reversed(self._names):
                self.supervisor.remove(name)
        self._names.clear()


def _describe(error: BaseException) -> str:
    """The error and its cause, one line (the cause is where psycopg says what happened)."""
    text = f"{type(error).__name__}: {error}".strip()
    cause = error.__cause__ or error.__context__
    if cause is not None and str(cause) not in text:
        text += f" (caused by {type(cause).__name__}: {cause})".replace("\n", " ")
    return text[:500]


@contextmanager
def subscription_stopped_by(stopping: threading.Event, subscription: Any) -> Iterator[Any]:
    """Enter an event-log subscription and stop it as soon as `stopping` is set (its iteration then ends)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.1):
            if stopping.is_set():
                subscription.stop()
                return

    watcher = threading.Thread(target=watch, name="subscription-stopper", daemon=True)
    watcher.start()
    try:
        with subscription:
            yield subscription
    finally:
        done.set()
        watcher.join()


class LagClock:
    """How long a follower has been behind the head, in seconds, from samples of the head.

    `observe(head, position)` remembers when the head first passed each value; the lag is the age of
    the oldest event the follower has not handled (0 when it has handled the head).
    """

    def __init__(self, max_samples: int = 4096) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def observe(self, head: int, position: int, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._samples or head > self._samples[-1][1]:
                self._samples.append((now, head))
            while len(self._samples) > 1 and self._samples[1][1] <= position:
                self._samples.popleft()
            if position >= head:
                return 0.0
            first_past = next((at for at, seen in self._samples if seen > position), now)
            return max(0.0, now - first_past)
