"""One busy account: concurrent commands in a process are decided together, each caller getting its own
answer; across processes optimistic concurrency stays the arbiter."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from application import account_batches
from application.account_batches import _stripe_of
from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.errors import InsufficientCredits
from domain.tasks import MediaTask
from infrastructure.projection_runners import ProjectionRunners

URL = "https://www.instagram.com/reel/Cabc123/"
ROOT = Path(__file__).resolve().parents[2]
POOL = {"POSTGRES_POOL_SIZE": "5", "POSTGRES_MAX_OVERFLOW": "15"}  # a shared server: a few connections suffice

# The other process: the same submissions from 32 threads, started at an agreed moment.
OTHER_PROCESS = """
import json, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from application import account_batches
from application.mediatasks import MediaTasks
env, user, keys, start_at = json.loads(sys.argv[1])
app = MediaTasks(env=env)
def call(key):
    time.sleep(max(0.0, start_at - time.time()))
    try:
        r = app.submit(user, "https://www.instagram.com/reel/Cabc123/", "subtitles", idempotency_key=key)
        return {"task_id": str(r.task_id), "created": r.created}
    except Exception as e:
        return {"error": type(e).__name__}
with ThreadPoolExecutor(len(keys)) as pool:
    print(json.dumps(list(pool.map(call, keys))))
print(app._account_batches.rival_writes_seen)
app.close()
"""

# The other process, on an event loop: (user, key) submissions awaited at once, in rounds, from an agreed moment.
OTHER_PROCESS_ASYNC = """
import asyncio, json, sys, time
from application.mediatasks import MediaTasks
env, calls, start_at = json.loads(sys.argv[1])
app = MediaTasks(env=env)
async def call(user, key):
    try:
        r = await app.submit_async(user, "https://www.instagram.com/reel/Cabc123/", "subtitles", idempotency_key=key)
        return {"task_id": str(r.task_id), "created": r.created}
    except Exception as e:
        return {"error": type(e).__name__}
async def main():
    await asyncio.sleep(max(0.0, start_at - time.time()))
    return await asyncio.gather(*(call(user, key) for user, key in calls))
print(json.dumps(asyncio.run(main())))
app.close()
"""


@pytest.fixture
def busy_app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env={**store_env, **POOL})
    yield application
    application.close()


def at_once(calls: list[Callable[[], Any]], start_at: float | None = None) -> list[Any]:
    barrier = threading.Barrier(len(calls))

    def call(fn: Callable[[], Any]) -> Any:
        barrier.wait()
        if start_at is not None:
            time.sleep(max(0.0, start_at - time.time()))
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - the test counts outcomes
            return e

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(call, calls))


def other_process(env: dict[str, str], user: str, keys: list[str], start_at: float) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, json.dumps([{**env, **POOL}, user, keys, start_at])],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )


def account_events(app: MediaTasks, user: str) -> list[Any]:
    return list(app.repository.event_store.get(CreditAccount.id_for(user)))


def assert_paid_once_each(app: MediaTasks, user: str, task_ids: set[UUID]) -> None:
    events = account_events(app, user)
    charges = Counter(e.task_id for e in events if isinstance(e, CreditAccount.Charged))
    assert set(charges) == task_ids and set(charges.values()) == {1}
    balance = 0
    for e in events:  # never negative at any point of the history
        balance += -e.amount if isinstance(e, CreditAccount.Charged) else getattr(e, "amount", 0)
        assert balance >= 0
    for task_id in task_ids:
        assert isinstance(app.get_task(task_id), MediaTask)


def test_64_submissions_in_one_process_against_n_prices(busy_app: MediaTasks) -> None:
    app, n = busy_app, 20
    app.create_user("ida", n)
    results = at_once([lambda i=i: app.submit("ida", URL, "subtitles", idempotency_key=f"k{i}") for i in range(64)])
    accepted = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(accepted) == n and all(r.created for r in accepted)
    assert len(refused) == 64 - n and all(isinstance(r, InsufficientCredits) for r in refused), refused[:3]
    assert app.get_account("ida").balance == 0
    assert_paid_once_each(app, "ida", {r.task_id for r in accepted})
    # decided together: several accepted submissions were saved in one transaction
    assert len({r.notification_id for r in accepted}) < len(accepted)
    charges = [e for e in account_events(app, "ida") if isinstance(e, CreditAccount.Charged)]
    assert len(charges) == n


def test_64_submissions_split_across_two_processes_with_a_duplicate_key_storm(
    busy_app: MediaTasks, store_env: dict[str, str]
) -> None:
    app, n = busy_app, 20
    app.create_user("jon", n)
    # 24 distinct keys here, 24 there, and 16 submissions of one key split between both
    here = [f"a{i}" for i in range(24)] + ["storm"] * 8
    there = [f"b{i}" for i in range(24)] + ["storm"] * 8
    start_at = time.time() + 3  # the other process's import and connections first
    process = other_process(store_env, "jon", there, start_at)
    local = at_once(
        [lambda k=k: app.submit("jon", URL, "subtitles", idempotency_key=k) for k in here], start_at=start_at
    )
    out, _ = process.communicate(timeout=120)
    remote_lines = out.splitlines()
    remote, remote_rival_writes = json.loads(remote_lines[0]), int(remote_lines[1])
    storm = MediaTask.id_for("jon", "storm")
    accepted_ids = {r.task_id for r in local if not isinstance(r, Exception) and r.created} | {
        UUID(r["task_id"]) for r in remote if r.get("created")
    }
    replays = [r for r in local if not isinstance(r, Exception) and not r.created] + [
        r for r in remote if r.get("created") is False
    ]
    refused = [r for r in local if isinstance(r, InsufficientCredits)] + [
        r for r in remote if r.get("error") == "InsufficientCredits"
    ]
    others = [r for r in local if isinstance(r, Exception) and not isinstance(r, InsufficientCredits)] + [
        r for r in remote if r.get("error") not in (None, "InsufficientCredits")
    ]
    assert not others, others[:3]
    assert len(accepted_ids) == n, (len(accepted_ids), len(replays), len(refused))
    assert app.get_account("jon").balance == 0
    assert_paid_once_each(app, "jon", accepted_ids)
    if storm in accepted_ids:  # the storm's key is one task, one charge; its other submissions replay it
        assert all(
            str(getattr(r, "task_id", r.get("task_id") if isinstance(r, dict) else "")) == str(storm) for r in replays
        )
    assert len(accepted_ids) + len(replays) + len(refused) == 64
    # the two processes' writes met: a save refused for the other's write, or a read that found it
    assert app._account_batches.rival_writes_seen + remote_rival_writes >= 1


def test_a_refund_races_a_grant_and_a_submission(busy_app: MediaTasks, store_env: dict[str, str]) -> None:
    app = busy_app
    app.create_user("kim", 6)
    failed = app.submit("kim", URL, "video").task_id  # 2 credits
    app.begin_attempt(failed, "w")
    app.fail(failed, 1, "media_not_found", "gone", retryable=False)  # the refund of 2 is due
    runners = ProjectionRunners(store_env)  # the refund issuer starts following now, racing the two below
    try:
        results = at_once(
            [
                lambda: app.grant_credits("kim", 5, "top-up"),
                lambda: app.submit("kim", URL, "video", idempotency_key="during").task_id,
                lambda: app.retry_task("kim", failed),
            ]
        )
        deadline = time.monotonic() + 30
        while not [e for e in app.repository.event_store.get(failed) if isinstance(e, MediaTask.Refunded)]:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        runners.stop()
    assert not [r for r in results if isinstance(r, Exception)], results
    events = account_events(app, "kim")
    refunds = [e for e in events if isinstance(e, CreditAccount.Refunded)]
    assert [(e.task_id, e.attempt, e.amount) for e in refunds] == [(failed, 1, 2)]
    assert app.get_task(failed).refunds_given == [1] and app.get_task(failed).charge_attempt == 2
    # 6 - 2 (failed) + 5 (grant) - 2 (submission) - 2 (retry) + 2 (refund of the failed run)
    assert app.get_account("kim").balance == 7
    assert sum(1 for e in events if isinstance(e, CreditAccount.Charged)) == 3


def gather(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run coroutines at once on one event loop (as the HTTP route awaits them); outcomes in order."""

    async def main() -> list[Any]:
        return await asyncio.gather(*(call() for call in calls), return_exceptions=True)

    return asyncio.run(main())


def test_64_async_submissions_on_one_account_against_n_prices(busy_app: MediaTasks) -> None:
    app, n = busy_app, 20
    app.create_user("lea", n)
    keys = [f"k{i}" for i in range(56)] + ["storm"] * 8  # and a duplicate-key storm in the same batches
    results = gather([lambda k=k: app.submit_async("lea", URL, "subtitles", idempotency_key=k) for k in keys])
    accepted = [r for r in results if not isinstance(r, Exception) and r.created]
    replays = [r for r in results if not isinstance(r, Exception) and not r.created]
    refused = [r for r in results if isinstance(r, Exception)]
    assert len(accepted) == n, (len(accepted), len(replays), refused[:3])
    assert all(isinstance(r, InsufficientCredits) for r in refused), refused[:3]
    storm = MediaTask.id_for("lea", "storm")
    assert all(r.task_id == storm for r in replays)  # the storm is one task at most, its repeats replay it
    assert len(accepted) + len(replays) + len(refused) == 64
    assert app.get_account("lea").balance == 0
    assert_paid_once_each(app, "lea", {r.task_id for r in accepted})
    assert len({r.notification_id for r in accepted}) < len(accepted)  # decided and committed together


def test_async_submissions_of_many_accounts_share_transactions_and_meet_sync_callers(busy_app: MediaTasks) -> None:
    app = busy_app
    for i in range(16):
        app.create_user(f"u{i}", 3)

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        on_loop = [app.submit_async(f"u{i % 16}", URL, "subtitles") for i in range(32)]
        in_threads = [loop.run_in_executor(None, app.submit, f"u{i}", URL, "subtitles") for i in range(16)]
        return await asyncio.gather(*on_loop, *in_threads, return_exceptions=True)

    results = asyncio.run(main())
    assert not [r for r in results if isinstance(r, Exception)], results[:3]  # 3 each: 2 awaited, 1 in a thread
    assert len({r.notification_id for r in results[:32]}) < 16  # several accounts in one transaction
    for i in range(16):
        assert app.get_account(f"u{i}").balance == 0
        mine = {r.task_id for r in results if app.get_task(r.task_id).user_id == f"u{i}"}
        assert_paid_once_each(app, f"u{i}", mine)
    refused = gather([lambda: app.submit_async("u0", URL, "subtitles")])[0]
    assert isinstance(refused, InsufficientCredits)
    assert len([e for e in account_events(app, "u0") if isinstance(e, CreditAccount.Charged)]) == 3


def test_an_async_submission_after_another_process_wrote_the_account(
    busy_app: MediaTasks, store_env: dict[str, str]
) -> None:
    app = busy_app
    app.create_user("max", 1)
    first = gather([lambda: app.submit_async("max", URL, "subtitles")])[0]
    assert first.created  # this process now remembers the account at balance 0
    other = MediaTasks(env={**store_env, **POOL})  # another process's grant: the remembered account is stale
    try:
        assert other.grant_credits("max", 2, "top-up")[0] == 2
    finally:
        other.close()
    results = gather([lambda i=i: app.submit_async("max", URL, "subtitles", idempotency_key=f"m{i}") for i in range(3)])
    assert sum(1 for r in results if not isinstance(r, Exception) and r.created) == 2
    assert sum(1 for r in results if isinstance(r, InsufficientCredits)) == 1
    assert app.get_account("max").balance == 0
    events = account_events(app, "max")
    assert [type(e).__name__ for e in events].count("Charged") == 3


def test_an_account_created_in_this_process_is_decided_from_memory_and_a_rival_write_still_counts(
    busy_app: MediaTasks, store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = busy_app
    app.create_user("ora", 1)
    app.create_user("pia", 0)
    reads: list[str] = []
    read_account = app.get_account
    monkeypatch.setattr(app, "get_account", lambda user_id: reads.append(user_id) or read_account(user_id))
    first = gather([lambda: app.submit_async("ora", URL, "subtitles")])[0]
    assert first.created and first.credits_charged == 1
    assert reads == [], "the first batch of an account created here reads no account"
    other = MediaTasks(env={**store_env, **POOL})  # another process's grant: the account held here is stale
    try:
        other.grant_credits("pia", 1, "top-up")
    finally:
        other.close()
    (paid,) = gather([lambda: app.submit_async("pia", URL, "subtitles")])
    assert not isinstance(paid, Exception) and paid.created, "the refusal from memory was decided again on a read"
    assert app._account_batches.rival_writes_seen == 1  # found by bringing the held account forward
    assert read_account("pia").balance == 0 and read_account("ora").balance == 0


def test_an_account_held_ahead_of_its_first_batch_is_not_read_by_it(
    busy_app: MediaTasks, store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = busy_app
    other = MediaTasks(env={**store_env, **POOL})  # the user was created by another process
    try:
        other.create_user("quin", 2)
    finally:
        other.close()
    reads: list[str] = []
    read_account = app.get_account
    monkeypatch.setattr(app, "get_account", lambda user_id: reads.append(user_id) or read_account(user_id))
    app.hold_account("quin")  # as at the lookup of its API key
    app.hold_account("quin")
    assert reads == ["quin"], "read once, then held"
    results = gather(
        [lambda i=i: app.submit_async("quin", URL, "subtitles", idempotency_key=f"q{i}") for i in range(3)]
    )
    assert reads == ["quin"], "the first batch read no account"
    assert sum(1 for r in results if not isinstance(r, Exception) and r.created) == 2
    assert sum(1 for r in results if isinstance(r, InsufficientCredits)) == 1
    assert read_account("quin").balance == 0


def test_a_rival_write_to_one_account_re_decides_that_account_alone(
    busy_app: MediaTasks, store_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, users = busy_app, [f"nia{i}" for i in range(8)]
    for user in users:
        app.create_user(user, 2)
        app.submit(user, URL, "subtitles")  # this process now remembers each account at balance 1
    other = MediaTasks(env={**store_env, **POOL})  # another process's grant to one of them
    try:
        other.grant_credits(users[0], 1, "top-up")
    finally:
        other.close()

    async def one_batch() -> list[Any]:
        # no decider runs until the last command is queued: then one takes all eight accounts at once
        monkeypatch.setattr(account_batches, "DECIDERS", 0)
        queued = [asyncio.ensure_future(app.submit_async(user, URL, "subtitles")) for user in users[:-1]]
        await asyncio.sleep(0)
        monkeypatch.setattr(account_batches, "DECIDERS", 1)
        queued.append(asyncio.ensure_future(app.submit_async(users[-1], URL, "subtitles")))
        return await asyncio.gather(*queued, return_exceptions=True)

    results = asyncio.run(one_batch())
    assert all(not isinstance(r, Exception) and r.created for r in results), results
    # the seven accounts nobody else wrote were committed in the batch's transaction (one position)...
    assert len({r.notification_id for r in results[1:]}) == 1
    # ...and only the stale one was decided again on a fresh read, and saved after them
    assert results[0].notification_id > results[1].notification_id
    assert app.get_account(users[0]).balance == 1  # 2 - 1 + 1 - 1: the rival's grant counted
    for user, result in zip(users, results, strict=True):
        paid = {e.task_id for e in account_events(app, user) if isinstance(e, CreditAccount.Charged)}
        assert len(paid) == 2 and result.task_id in paid
        assert_paid_once_each(app, user, paid)
        assert app.get_account(user).balance == (1 if user == users[0] else 0)


def test_a_conflict_storm_of_two_processes_on_the_same_accounts(
    busy_app: MediaTasks, store_env: dict[str, str]
) -> None:
    """Both processes' event loops submit to the same eight accounts at once (each process remembers
    them, so their first saves conflict): every caller its own answer, n accepted per account."""
    app, users, n = busy_app, [f"ora{i}" for i in range(8)], 5
    for user in users:
        app.create_user(user, n + 1)
        app.submit(user, URL, "subtitles")  # remembered here at balance n
    # 12 keys per account and process, 4 of them shared by both (a duplicate-key storm across processes)
    here = [(u, f"{u}-{k}") for u in users for k in [f"a{i}" for i in range(8)] + [f"s{i}" for i in range(4)]]
    there = [(u, f"{u}-{k}") for u in users for k in [f"b{i}" for i in range(8)] + [f"s{i}" for i in range(4)]]
    start_at = time.time() + 3
    process = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS_ASYNC, json.dumps([{**store_env, **POOL}, there, start_at])],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )

    async def main() -> list[Any]:
        await asyncio.sleep(max(0.0, start_at - time.time()))
        calls = [app.submit_async(u, URL, "subtitles", idempotency_key=k) for u, k in here]
        return await asyncio.gather(*calls, return_exceptions=True)

    local = asyncio.run(main())
    out, _ = process.communicate(timeout=120)
    remote = json.loads(out)
    assert process.returncode == 0
    answers: list[tuple[str, str, str | None, bool | None]] = []  # user, key, task id, created (None: refused)
    for (user, key), r in zip(here, local, strict=True):
        if isinstance(r, InsufficientCredits):
            answers.append((user, key, None, None))
        else:
            assert not isinstance(r, Exception), r
            answers.append((user, key, str(r.task_id), r.created))
    for (user, key), r in zip(there, remote, strict=True):
        assert r.get("error") in (None, "InsufficientCredits"), r
        answers.append((user, key, r.get("task_id"), r.get("created")))
    for user in users:
        mine = [a for a in answers if a[0] == user]
        created = [a[2] for a in mine if a[3] is True]
        accepted = set(created)
        assert len(created) == len(accepted) == n, mine  # no task created twice
        for _, key, task_id, created in mine:
            if task_id is not None:  # accepted or replayed: the task of that key
                assert task_id == str(MediaTask.id_for(user, key))
            if created is False:  # a replay: of a task the other caller of its key created
                assert task_id in accepted
        assert app.get_account(user).balance == 0
        paid = {e.task_id for e in account_events(app, user) if isinstance(e, CreditAccount.Charged)}
        assert {str(t) for t in paid} >= accepted and len(paid) == n + 1
        assert_paid_once_each(app, user, paid)


def test_an_account_whose_batch_is_being_decided_holds_up_no_other_account(busy_app: MediaTasks) -> None:
    app = busy_app
    app.create_user("ana", 5)
    app.create_user("ben", 5)
    assert _stripe_of("ana") != _stripe_of("ben")
    entered, release = threading.Event(), threading.Event()

    def slow(account: CreditAccount, batch: Any) -> Callable[[int | None], str]:
        entered.set()  # a decider holds ana's account until released
        assert release.wait(30)
        return lambda last_id: "slow"

    async def main() -> tuple[Any, Any, Any, bool]:
        held = asyncio.ensure_future(app._account_batches.run_async("ana", slow))
        try:
            while not entered.is_set():
                await asyncio.sleep(0.01)
            behind = asyncio.ensure_future(app.submit_async("ana", URL, "subtitles"))  # waits for the held batch
            ben = await asyncio.wait_for(app.submit_async("ben", URL, "subtitles"), 10)  # does not
            ana_still_held = not release.is_set() and not behind.done()
        finally:
            release.set()
        return await held, await behind, ben, ana_still_held

    slow_answer, ana, ben, ana_still_held = asyncio.run(main())
    assert ana_still_held  # ben was answered while ana's batch was still being decided
    assert slow_answer == "slow" and ana.created and ben.created
    assert app.get_account("ana").balance == 4 and app.get_account("ben").balance == 4
