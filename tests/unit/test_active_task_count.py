"""The in-memory count of a user's active tasks keeps the submissions accepted while it is read afresh."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from infrastructure.api.rate_limits import RequestLimits
from infrastructure.postgres.user_limits import UserLimits


class NoOverrides:
    def get(self, user_id: str) -> UserLimits:
        return UserLimits()


class SlowReadModel(RequestLimits):
    """The read model holds `active` tasks; a fresh read waits for `release` once `reading` is set."""

    def __init__(self) -> None:
        settings = SimpleNamespace(
            rate_limit_storage="memory://",
            rate_limit_submissions="1000/second",
            rate_limit_reads="1000/second",
            max_active_tasks=100,
        )
        super().__init__(settings, NoOverrides(), views=None)  # type: ignore[arg-type]
        self.active = 0
        self.reading = threading.Event()
        self.release = threading.Event()

    def active_tasks(self, user_id: str) -> int:
        if self.reading.is_set():
            assert self.release.wait(5)
        return self.active


def test_submissions_counted_during_a_fresh_read_are_not_lost() -> None:
    limits = SlowReadModel()
    limits.check_active_tasks("u")  # read: 0 active, then this one counted
    limits._active["u"] = (1, 0.0)  # the count is due a fresh read
    assert limits.active_count_due("u")
    limits.active = 1  # what the read model will say: the first task only
    limits.reading.set()
    refresh = threading.Thread(target=limits.refresh_active_count, args=("u",))
    refresh.start()
    for _ in range(3):  # accepted while the read runs (far below the cap: counted in memory)
        limits.check_active_tasks("u")
    limits.release.set()
    refresh.join(5)
    assert limits._active["u"][0] == 4, "the read's 1 plus the 3 submissions made meanwhile"
    assert not limits.active_count_due("u"), "fresh for ACTIVE_COUNT_SECONDS"
