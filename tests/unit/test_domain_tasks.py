"""MediaTask and CreditAccount without any database."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import uuid4

import pytest

from domain.credits import ApiKey, CreditAccount
from domain.errors import (
    AlreadyRefunded,
    ChargeNotFound,
    InsufficientCredits,
    InvalidAmount,
    InvalidLanguages,
    InvalidOutputType,
    InvalidProgress,
    InvalidTransition,
    InvalidUserId,
    ProgressWentBackwards,
    StaleAttempt,
    TaskNotRetryable,
)
from domain.tasks import MediaTask

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=10)


def new_task(max_attempts: int = 3, **kw) -> MediaTask:
    args = dict(
        user_id="u",
        idempotency_key=uuid4().hex,
        url="https://youtu.be/x",
        platform="youtube",
        output_type="subtitles",
        languages=["en"],
        credits=1,
        requested_at=NOW,
        max_attempts=max_attempts,
    )
    args.update(kw)
    return MediaTask.start(**args)


def later(task: MediaTask, seconds: float) -> datetime:
    return task.modified_on + timedelta(seconds=seconds)


def test_task_id_is_derived_from_user_and_key() -> None:
    a = new_task(idempotency_key="k")
    b = new_task(idempotency_key="k")
    c = new_task(idempotency_key="k", user_id="v")
    assert a.id == b.id != c.id


def test_happy_lifecycle_and_progress_ladder() -> None:
    task = new_task()
    assert task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w") == "started"
    for stage, p in [("metadata", 20), ("video", 30), ("video", 40), ("subtitles", 70), ("upload", 90)]:
        task.report_progress(attempt=1, stage=stage, progress=p)
    task.complete(attempt=1, result={"ok": True})
    assert (task.status, task.progress) == ("extracted", 100)
    names = [type(e).__name__ for e in task.collect_events()]
    assert names == ["Started", "Downloading"] + ["Processing"] * 5 + ["Extracted"]


def test_replay_gives_the_same_state() -> None:
    task = new_task()
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    task.report_progress(attempt=1, stage="video", progress=40)
    task.fail(attempt=1, code="timeout", message="slow", retryable=True)
    events = task.collect_events()
    replayed = None
    for e in events:
        replayed = e.mutate(replayed)
    assert replayed.__dict__ == task.__dict__


@pytest.mark.parametrize("bad", [-1, 100, 101, 2.5, "50"])
def test_progress_must_be_a_whole_number_below_100(bad) -> None:
    task = new_task()
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    with pytest.raises(InvalidProgress):
        task.report_progress(attempt=1, stage="video", progress=bad)


def test_progress_may_not_go_backwards_and_nothing_is_recorded() -> None:
    task = new_task()
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    task.report_progress(attempt=1, stage="video", progress=40)
    task.collect_events()
    with pytest.raises(ProgressWentBackwards):
        task.report_progress(attempt=1, stage="video", progress=30)
    assert task.collect_events() == []


def test_a_stale_attempt_cannot_write() -> None:
    task = new_task()
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w1")
    task.begin_attempt(now=later(task, 601), lease=LEASE, worker_id="w2")
    assert task.attempt == 2
    with pytest.raises(StaleAttempt):
        task.report_progress(attempt=1, stage="video", progress=50)
    with pytest.raises(StaleAttempt):
        task.complete(attempt=1, result={})


def test_completing_a_failed_task_is_refused() -> None:
    task = new_task()
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    task.fail(attempt=1, code="media_not_found", message="404", retryable=False)
    with pytest.raises(InvalidTransition):
        task.complete(attempt=1, result={})
    with pytest.raises(InvalidTransition):
        new_task().report_progress(attempt=0, stage="x", progress=10)


def test_retryable_failures_exhaust_into_retries_exhausted() -> None:
    task = new_task(max_attempts=2)
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    assert task.fail(attempt=1, code="timeout", message="slow", retryable=True) is False
    assert task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w") == "retrying"
    assert task.fail(attempt=2, code="timeout", message="slow", retryable=True) is True
    assert task.error["code"] == "retries_exhausted"
    assert task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w") == "not_retryable"


def test_a_transient_failure_on_the_queues_last_delivery_is_terminal() -> None:
    task = new_task(max_attempts=3)
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    assert task.fail(attempt=1, code="timeout", message="slow", retryable=True, last_delivery=True) is True
    failed = task.collect_events()[-1]
    assert (failed.code, failed.terminal, failed.retryable) == ("retries_exhausted", True, True)
    assert failed.context["last_error"] == "timeout"
    assert task.begin_attempt(now=later(task, 1), lease=LEASE, worker_id="w") == "not_retryable"


def test_user_retry_opens_a_new_paid_cycle() -> None:
    task = new_task(max_attempts=1)
    with pytest.raises(TaskNotRetryable):
        task.retry(credits=1, requested_at=NOW)
    task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w")
    task.fail(attempt=1, code="timeout", message="slow", retryable=True)
    assert task.retry(credits=1, requested_at=NOW) == 2
    assert (task.status, task.charge_attempt, task.attempts_in_cycle) == ("queued", 2, 0)
    assert task.begin_attempt(now=later(task, 0), lease=LEASE, worker_id="w") == "started"
    assert task.attempt == 2


def test_submission_values_are_checked() -> None:
    with pytest.raises(InvalidOutputType):
        new_task(output_type="podcast")
    with pytest.raises(InvalidLanguages):
        new_task(languages=["english language"])
    with pytest.raises(InvalidLanguages):
        new_task(languages=[f"l{i}" for i in range(11)])
    assert new_task(languages=["en", "en", "pt-BR"]).languages == ["en", "pt-BR"]


def test_account_grant_charge_refund_invariants() -> None:
    account = CreditAccount.open("u")
    assert account.id == CreditAccount.id_for("u")
    for bad in (0, -3, 1.5, True):
        with pytest.raises(InvalidAmount):
            account.grant(bad)
    account.grant(3, "welcome")
    task_id = uuid4()
    with pytest.raises(InsufficientCredits):
        account.charge(task_id, 1, 4)
    account.charge(task_id, 1, 3)
    assert account.balance == 0
    with pytest.raises(InvalidAmount):
        account.refund(task_id, 1, 0)
    account.refund(task_id, 1, 3)
    assert account.balance == 3
    assert set(vars(account)) <= {
        "_id",
        "_version",
        "_created_on",
        "_modified_on",
        "_pending_events",
        "user_id",
        "balance",
    }


def test_a_task_releases_its_charge_once_and_only_after_a_terminal_failure() -> None:
    task = new_task()
    with pytest.raises(ChargeNotFound):
        task.refund(1)  # queued: nothing to release
    task.begin_attempt(now=NOW, lease=LEASE, worker_id="w")
    task.complete(attempt=1, result={})
    with pytest.raises(ChargeNotFound):
        task.refund(1)  # extracted: never refunded
    failed = new_task()
    failed.begin_attempt(now=NOW, lease=LEASE, worker_id="w")
    failed.fail(attempt=1, code="media_not_found", message="gone", retryable=False)
    assert failed.refunds_due == {1: failed.credits}
    assert failed.refund(1) == failed.credits
    with pytest.raises(AlreadyRefunded):
        failed.refund(1)
    # a user retry is a new paid run, refunded on its own when it fails too
    failed.retry(credits=2, requested_at=NOW)
    failed.begin_attempt(now=NOW, lease=LEASE, worker_id="w")
    failed.fail(attempt=2, code="media_not_found", message="gone", retryable=False)
    assert failed.refund(2) == 2
    assert failed.refunds_due == {} and failed.refunds_given == [1, 2]


@pytest.mark.parametrize("user_id", ["", " x", "a" * 65, "a/b", "ünï", None])
def test_user_ids_are_checked(user_id) -> None:
    with pytest.raises(InvalidUserId):
        CreditAccount.open(user_id)


def test_api_key_is_found_by_its_hash_and_can_be_revoked() -> None:
    key = ApiKey.issue("u", "ab" * 32, "mt_abcde")
    assert key.id == ApiKey.id_for("ab" * 32)
    key.revoke()
    key.revoke()
    assert key.revoked and len(key.collect_events()) == 2
