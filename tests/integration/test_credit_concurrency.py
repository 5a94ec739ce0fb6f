"""Concurrent submissions never overspend; one Idempotency-Key is one task and one charge."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from application.mediatasks import MediaTasks
from domain.errors import IdempotencyKeyReused, InsufficientCredits
from domain.tasks import MediaTask

URL = "https://www.instagram.com/reel/Cabc123/"


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env={**store_env, "POSTGRES_POOL_SIZE": "20", "POSTGRES_MAX_OVERFLOW": "30"})
    yield application
    application.close()


def run_concurrently(n: int, fn) -> list:
    barrier = threading.Barrier(n)

    def call(i: int):
        barrier.wait()
        try:
            return fn(i)
        except Exception as e:  # noqa: BLE001 - the test counts outcomes
            return e

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


def charges(app: MediaTasks, user_id: str) -> list[tuple[object, int]]:
    """(task id, first attempt) of every charge in the account's history."""
    account_id = app.get_account(user_id).id
    return [(e.task_id, e.attempt) for e in app.repository.event_store.get(account_id) if type(e).__name__ == "Charged"]


def test_fifty_submissions_against_ten_credits_accept_exactly_ten(app: MediaTasks, store_env: dict[str, str]) -> None:
    # Two application instances (as two processes would be): they race through optimistic concurrency.
    other = MediaTasks(env={**store_env, "POSTGRES_POOL_SIZE": "20", "POSTGRES_MAX_OVERFLOW": "30"})
    app.create_user("dora", 10)
    apps = [app, other]
    results = run_concurrently(50, lambda i: apps[i % 2].submit("dora", URL, "subtitles", idempotency_key=f"k{i}"))
    other.close()
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(accepted) == 10
    assert len(refused) == 40 and all(isinstance(r, InsufficientCredits) for r in refused)
    account = app.get_account("dora")
    assert account.balance == 0
    assert len(charges(app, "dora")) == 10
    # balance never negative at any point of the account's history
    balance = 0
    for e in app.repository.event_store.get(account.id):
        balance += getattr(e, "amount", 0) * (-1 if type(e).__name__ == "Charged" else 1)
        assert balance >= 0
    created = [r.task_id for r in accepted]
    assert all(isinstance(app.repository.get(t), MediaTask) for t in created)


def test_same_idempotency_key_twenty_times_concurrently_is_one_task_one_charge(
    app: MediaTasks, store_env: dict[str, str]
) -> None:
    other = MediaTasks(env=store_env)
    app.create_user("eve", 10)
    apps = [app, other]
    results = run_concurrently(20, lambda i: apps[i % 2].submit("eve", URL, "video", idempotency_key="same-key"))
    other.close()
    assert not [r for r in results if isinstance(r, Exception)]
    assert len({r.task_id for r in results}) == 1
    assert sum(r.created for r in results) == 1
    assert app.get_account("eve").balance == 8
    assert len(charges(app, "eve")) == 1


def test_same_key_other_body_is_refused(app: MediaTasks) -> None:
    app.create_user("fay", 10)
    first = app.submit("fay", URL, "video", idempotency_key="k")
    again = app.submit("fay", URL, "video", idempotency_key="k")
    assert (again.task_id, again.created) == (first.task_id, False)
    with pytest.raises(IdempotencyKeyReused):
        app.submit("fay", URL, "subtitles", idempotency_key="k")
    assert app.get_account("fay").balance == 8


def test_keys_are_scoped_per_user(app: MediaTasks) -> None:
    app.create_user("gil", 10)
    app.create_user("hal", 10)
    a = app.submit("gil", URL, "video", idempotency_key="k")
    b = app.submit("hal", URL, "video", idempotency_key="k")
    assert a.task_id != b.task_id and a.created and b.created
