"""The rate limiter's memory storage: one sweep thread a second, not one per request."""

from limits import parse
from limits.strategies import MovingWindowRateLimiter

from infrastructure.api.rate_limits import SweptMemoryStorage, counters


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
