"""The in-memory count of a user's active tasks keeps the submissions accepted while it is read afresh;
both it and the cached overrides are read again in the background by one claim at a time (ReadAhead)."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

from infrastructure.api.rate_limits import READS, SUBMISSIONS, QueuedReads, RequestLimits
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
    limits.active_counts.put("u", 1, 0.0)  # the count is due a fresh read
    (due,) = limits.refreshes_due(SUBMISSIONS, "u")
    limits.active = 1  # what the read model will say: the first task only
    limits.reading.set()
    refresh = threading.Thread(target=due)
    refresh.start()
    for _ in range(3):  # accepted while the read runs (far below the cap: counted in memory)
        limits.check_active_tasks("u")
    limits.release.set()
    refresh.join(5)
    assert limits.active_counts.fresh("u") == 4, "the read's 1 plus the 3 submissions made meanwhile"
    assert limits.refreshes_due(SUBMISSIONS, "u") == [], "fresh for ACTIVE_COUNT_SECONDS"


def test_only_a_submission_claims_a_fresh_count_and_one_at_a_time() -> None:
    limits = SlowReadModel()
    limits.check_active_tasks("u")
    limits.active_counts.put("u", 1, 0.0)
    assert limits.refreshes_due(READS, "u") == []
    assert len(limits.refreshes_due(SUBMISSIONS, "u")) == 1
    assert limits.refreshes_due(SUBMISSIONS, "u") == [], "one read at a time"


def test_a_count_read_under_way_when_the_limits_change_is_dropped() -> None:
    limits = SlowReadModel()
    limits.check_active_tasks("u")
    limits.active_counts.put("u", 1, 0.0)
    (due,) = limits.refreshes_due(SUBMISSIONS, "u")
    limits.forget("u")  # PUT /v1/admin/users/u/limits
    limits.active = 5
    due()
    assert limits.active_counts.known("u") is None  # the next submission reads the count itself


class CountedOverrides:
    def __init__(self) -> None:
        self.reads = 0
        self.value = UserLimits()

    def get(self, user_id: str) -> UserLimits:
        self.reads += 1
        return self.value


def limits_with(overrides: CountedOverrides) -> RequestLimits:
    settings = SimpleNamespace(
        rate_limit_storage="memory://",
        rate_limit_submissions="1000/second",
        rate_limit_reads="1000/second",
        max_active_tasks=100,
    )
    return RequestLimits(settings, overrides, views=None)  # type: ignore[arg-type]


def test_overrides_about_to_expire_are_read_again_ahead_once() -> None:
    overrides = CountedOverrides()
    limits = limits_with(overrides)
    assert limits.limits_of("u") == UserLimits() and overrides.reads == 1
    assert limits.refreshes_due(READS, "u") == []  # fresh for seconds yet
    limits.cached_limits.put("u", UserLimits(), time.monotonic() + 0.5)  # expires within the read-ahead second
    (due,) = limits.refreshes_due(READS, "u")
    assert limits.refreshes_due(READS, "u") == []  # one read at a time
    overrides.value = UserLimits(max_active_tasks=7)
    due()
    assert overrides.reads == 2
    assert limits.limits_of("u").max_active_tasks == 7 and overrides.reads == 2  # from the cache, for 5 s
    known = limits.cached_limits.known("u")
    assert known is not None and known[1] > time.monotonic() + 4


def test_a_read_ahead_under_way_when_the_overrides_change_is_dropped() -> None:
    overrides = CountedOverrides()
    limits = limits_with(overrides)
    limits.limits_of("u")
    limits.cached_limits.put("u", UserLimits(), time.monotonic() + 0.5)
    (due,) = limits.refreshes_due(READS, "u")
    limits.forget("u")  # PUT /v1/admin/users/u/limits: the read under way may have the old value
    due()
    assert limits.cached_limits.known("u") is None
    overrides.value = UserLimits(max_active_tasks=3)
    assert limits.limits_of("u").max_active_tasks == 3


def test_background_reads_queue_for_one_job_and_a_failed_one_does_not_stop_the_next() -> None:
    reads = QueuedReads()
    done: list[str] = []

    def failing() -> None:
        raise OSError("store down")

    assert reads.add(failing) is True  # the first starts the job
    assert reads.add(lambda: done.append("second")) is False  # queued behind it: no second job
    reads.run()
    assert done == ["second"]
    assert reads.add(lambda: done.append("third")) is True  # the job ended: the next read starts one
