"""The supervisor: a follower that raises is restarted with backoff and resumes from its position."""

from __future__ import annotations

import threading
import time

import pytest

from infrastructure.supervision import LagClock, Supervisor, backoff_delay


class FlakyFollower:
    """Handles positions 1, 2, 3, ... and fails after `fail_at` positions of each of its first runs."""

    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.runs: list[int] = []  # the position each run resumed from
        self.handled: list[int] = []
        self.run_started: list[float] = []
        self._position = 0

    def position(self) -> int | None:
        return self._position

    def run(self, stopping: threading.Event) -> None:
        self.runs.append(self._position)
        self.run_started.append(time.monotonic())
        for _ in range(2):
            self._position += 1
            self.handled.append(self._position)
        if len(self.runs) <= self.failures:
            raise ConnectionError(f"server closed the connection (run {len(self.runs)})")
        while not stopping.wait(0.01):
            pass


def wait_until(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_a_failing_follower_is_restarted_with_backoff_from_its_position() -> None:
    follower = FlakyFollower(failures=3)
    supervisor = Supervisor(backoff_base_seconds=0.05, backoff_cap_seconds=1.0)
    try:
        supervisor.add(follower)
        wait_until(lambda: len(follower.runs) == 4)
        wait_until(lambda: supervisor.statuses()[0].state == "running")
        [status] = supervisor.statuses()
        assert status.restarts == 3
        assert "ConnectionError: server closed the connection (run 3)" in (status.last_error or "")
        assert status.position == 8
        assert status.progressed_at is not None
    finally:
        supervisor.stop()
    assert follower.runs == [0, 2, 4, 6]  # every run resumed where the previous one stopped
    assert follower.handled == list(range(1, 9))  # nothing skipped, nothing twice
    gaps = [b - a for a, b in zip(follower.run_started, follower.run_started[1:], strict=False)]
    assert gaps[0] >= 0.05 * 0.5 * 0.9 and gaps[2] >= 0.2 * 0.5 * 0.9  # 0.05, 0.1, 0.2 s, each jittered


def test_a_crash_loop_shows_as_restarting_with_its_error() -> None:
    follower = FlakyFollower(failures=10**6)
    supervisor = Supervisor(backoff_base_seconds=0.2, backoff_cap_seconds=0.2)
    try:
        supervisor.add(follower)
        wait_until(lambda: supervisor.statuses()[0].restarts >= 2)
        [status] = supervisor.statuses()
        assert status.state == "restarting"
        assert status.last_error is not None and "ConnectionError" in status.last_error
    finally:
        supervisor.stop()
    assert supervisor.statuses() == []


def test_a_follower_that_returns_unasked_is_restarted_too() -> None:
    class Quitter:
        name = "quitter"
        runs = 0

        def run(self, stopping: threading.Event) -> None:
            Quitter.runs += 1

    supervisor = Supervisor(backoff_base_seconds=0.01, backoff_cap_seconds=0.02)
    try:
        supervisor.add(Quitter())
        wait_until(lambda: Quitter.runs >= 3)
        assert "returned without being asked to stop" in (supervisor.statuses()[0].last_error or "")
    finally:
        supervisor.stop()


def test_names_are_unique_and_a_removed_follower_stops() -> None:
    follower = FlakyFollower(failures=0)
    supervisor = Supervisor()
    try:
        supervisor.add(follower)
        with pytest.raises(ValueError, match="supervised already"):
            supervisor.add(FlakyFollower(failures=0))
        supervisor.remove("flaky")
        assert supervisor.names() == []
    finally:
        supervisor.stop()
    assert len(follower.runs) == 1


def test_the_backoff_is_exponential_capped_and_jittered() -> None:
    delays = [backoff_delay(n, 0.5, 30.0) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        full = min(30.0, 0.5 * 2 ** (n - 1))
        assert full / 2 <= delay <= full


def test_the_lag_clock_measures_how_long_the_oldest_unhandled_event_waits() -> None:
    clock = LagClock()
    assert clock.observe(head=10, position=10, now=0.0) == 0.0
    assert clock.observe(head=12, position=10, now=1.0) == 0.0  # the head moved just now
    assert clock.observe(head=15, position=10, now=5.0) == 4.0  # 11 and 12 have waited since t=1
    assert clock.observe(head=15, position=12, now=6.0) == 1.0  # 13..15 appeared at t=5
    assert clock.observe(head=15, position=15, now=7.0) == 0.0
