"""The rate limiter's memory storage: one sweep thread a second, not one per request."""

import time
from types import SimpleNamespace
from typing import Any

import pytest
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from infrastructure.api.errors import ApiError
from infrastructure.api.rate_limits import READS, SUBMISSIONS, RequestLimits, SweptMemoryStorage, counters
from infrastructure.postgres.user_limits import UserLimits


def test_hits_share_one_sweep_and_the_moving_window_still_limits() -> None:
    storage = counters("memory://")
    assert isinstance(storage, SweptMemoryStorage)
    storage.timer.join()  # the base class's first sweep, started when it was made
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3/minute")
    first = limiter.hit(item, "submissions", "key-a")
    sweep = storage.timer  # started by that hit: due in a second
    rest = [limiter.hit(item, "submissions", "key-a") for _ in range(4)]
    assert [first, *rest] == [True, True, True, False, False]
    assert limiter.hit(item, "submissions", "key-b")  # each key its own window
    assert storage.timer is sweep and sweep.is_alive() and sweep.daemon  # no new thread per hit
    assert limiter.get_window_stats(item, "submissions", "key-a").remaining == 0


class Clock:
    """time.time() for the storage: stands still until moved."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_hit_and_window_answers_as_acquire_entry_then_get_moving_window(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    ours, theirs = SweptMemoryStorage(), MemoryStorage()
    steps = [0.0, 0.5, 1.0, 1.5, 2.0, 9.9, 10.05, 10.6, 11.2, 11.2, 30.0, 30.0, 30.1, 30.2, 30.3]
    for limit in (1, 3):
        for at in steps:
            clock.now = 1_700_000_000.0 + limit * 100 + at
            for key in ("key-a", "key-b") if at < 20 else ("key-a",):
                expected = (theirs.acquire_entry(key, limit, 10), *theirs.get_moving_window(key, limit, 10))
                assert ours.hit_and_window(key, limit, 10) == expected, (limit, at, key)
    clock.now += 1_000
    assert (
        ours.hit_and_window("key-c", 0, 10)
        == (False, clock.now, 0)
        == (
            theirs.acquire_entry("key-c", 0, 10),
            *theirs.get_moving_window("key-c", 0, 10),
        )
    )
    for storage in (ours, theirs):
        storage.timer.cancel()


RATES = {"rate_limit_submissions": "3/10second", "rate_limit_reads": "5/minute"}


def _request_limits(storage: MemoryStorage) -> RequestLimits:
    settings = SimpleNamespace(rate_limit_storage="memory://", max_active_tasks=100, **RATES)
    limits = RequestLimits(settings, SimpleNamespace(get=lambda user_id: UserLimits()), views=None)  # type: ignore[arg-type]
    limits.limiter = MovingWindowRateLimiter(storage)
    return limits


def test_the_ratelimit_headers_and_429s_are_those_of_a_second_window_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """Counted with the memory storage's one call (ours) or `limits`' hit and get_window_stats (any storage)."""
    clock = Clock()
    monkeypatch.setattr(time, "time", clock)
    ours, theirs = _request_limits(SweptMemoryStorage()), _request_limits(MemoryStorage())
    assert type(theirs.limiter.storage) is MemoryStorage  # not ours: `limits`' own two calls

    def answer(limits: RequestLimits, kind: str) -> Any:
        try:
            return limits.hit(kind, "key-a", "u")
        except ApiError as refused:
            return refused.status, refused.code, refused.message, refused.details, refused.headers

    answers = []
    for at in [0.0, 0.4, 3.7, 4.0, 9.5, 10.2, 10.9, 14.0, 40.0, 40.0, 40.0, 40.0, 40.0, 40.0, 41.5]:
        clock.now = 1_700_000_000.0 + at
        for kind in (SUBMISSIONS, READS):
            expected = answer(theirs, kind)
            assert answer(ours, kind) == expected, (at, kind)
            answers.append(expected)
    assert {type(a) for a in answers} == {dict, tuple}, "both answered and refused"
    assert answers[0] == {"RateLimit-Policy": '"submissions";q=3;w=10', "RateLimit": '"submissions";r=2;t=10'}
