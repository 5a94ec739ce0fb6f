"""API keys known to the process: concurrent requests with a new key share one lookup (which also reads the
user's limits ahead), a key in use is looked up again in the background before it expires, and a revoked key
is refused at most KEY_CACHE_SECONDS after its revocation."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from application.mediatasks import hash_api_key
from infrastructure.api import api_keys, read_ahead
from infrastructure.api.api_keys import KEY_CACHE_SECONDS, KnownApiKeys
from infrastructure.api.deps import current_user
from infrastructure.api.errors import ApiError
from infrastructure.api.limits import FailedAuthentications
from infrastructure.api.rate_limits import SUBMISSIONS, RequestLimits
from infrastructure.postgres.user_limits import UserLimits

KEY = "mt_alice"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


class KeyStore:
    """alice's key, revocable; each lookup counted, and held while `hold` is set until `release` is."""

    def __init__(self) -> None:
        self.revoked = False
        self.lookups = 0
        self.hold, self.release = threading.Event(), threading.Event()

    def authenticate(self, api_key: str) -> str | None:
        return self.user_of_key(hash_api_key(api_key))

    def user_of_key(self, key_hash: str) -> str | None:
        self.lookups += 1
        if self.hold.is_set():
            assert self.release.wait(5)
        time.sleep(0.01)
        return "alice" if key_hash == hash_api_key(KEY) and not self.revoked else None


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    for module in (api_keys, read_ahead):
        monkeypatch.setattr(module, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def request_with(keys: KnownApiKeys) -> SimpleNamespace:
    state = SimpleNamespace(api_keys=keys, auth_failures=FailedAuthentications(per_minute=1000, delay_seconds=0))
    return SimpleNamespace(app=SimpleNamespace(state=state), client=SimpleNamespace(host="198.51.100.7"))


async def caller(keys: KnownApiKeys) -> str | int:
    """The user of KEY, or the status of the refusal."""
    try:
        return await current_user(request_with(keys), HTTPAuthorizationCredentials(scheme="Bearer", credentials=KEY))  # type: ignore[arg-type]
    except ApiError as refused:
        return refused.status


async def background_done(keys: KnownApiKeys) -> None:
    for _ in range(500):
        if not keys.background._running:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the background lookup did not end")


def test_concurrent_requests_with_a_new_key_share_one_lookup_that_reads_the_limits_too(clock: Clock) -> None:
    store = KeyStore()
    overrides_read: list[str] = []
    settings = SimpleNamespace(
        rate_limit_storage="memory://",
        rate_limit_submissions="1000/second",
        rate_limit_reads="1000/second",
        max_active_tasks=100,
    )
    limits = RequestLimits(settings, SimpleNamespace(get=lambda u: overrides_read.append(u) or UserLimits()), None)
    limits.active_tasks = lambda user_id: 0  # type: ignore[method-assign]
    keys = KnownApiKeys(store.authenticate, store.user_of_key, limits.know)

    async def scenario() -> list[str | int]:
        return await asyncio.gather(*(caller(keys) for _ in range(20)))

    assert asyncio.run(scenario()) == ["alice"] * 20
    assert store.lookups == 1, "one lookup for the 20 requests that came with the key at once"
    assert overrides_read == ["alice"], "the user's overrides read once, with the key"
    assert limits.counts_without_io(SUBMISSIONS, "alice"), "its first submission is counted on the event loop"


def test_a_key_in_use_is_looked_up_again_in_the_background_before_it_expires(clock: Clock) -> None:
    store = KeyStore()
    keys = KnownApiKeys(store.authenticate, store.user_of_key)

    async def scenario() -> None:
        assert await caller(keys) == "alice"
        assert store.lookups == 1
        clock.now += KEY_CACHE_SECONDS - 4  # within the last KEY_READ_AHEAD_SECONDS of its answer
        store.hold.set()  # the lookup in the background is slow...
        assert await asyncio.wait_for(caller(keys), 1) == "alice", "...and nobody waits for it"
        assert await caller(keys) == "alice"
        store.release.set()
        await background_done(keys)
        assert store.lookups == 2, "one lookup in the background"
        clock.now += 5  # past the first answer's expiry: the second answer holds
        assert await caller(keys) == "alice"
        assert store.lookups == 2, "no request waited for a lookup after the first one"

    asyncio.run(scenario())


@pytest.mark.parametrize("revoked_at", [3.0, 27.0])
def test_a_revoked_key_is_refused_within_key_cache_seconds_of_its_revocation(clock: Clock, revoked_at: float) -> None:
    """Requests once a second: the last answer found valid was looked up before the revocation, so from
    revocation + KEY_CACHE_SECONDS every request is refused (27 s: just after the lookup ahead at 26 s)."""
    store = KeyStore()
    keys = KnownApiKeys(store.authenticate, store.user_of_key)
    start = clock.now

    async def scenario() -> dict[float, str | int]:
        answers = {}
        for second in range(80):
            clock.now = start + second
            store.revoked = second >= revoked_at
            answers[float(second)] = await caller(keys)
            await background_done(keys)
        return answers

    answers = asyncio.run(scenario())
    assert all(answers[s] == "alice" for s in answers if s < revoked_at)
    assert all(answers[s] == 401 for s in answers if s >= revoked_at + KEY_CACHE_SECONDS)
    refused = [s for s, answer in answers.items() if answer == 401]
    assert refused == [s for s in answers if s >= refused[0]], "once refused, refused for good"


def test_a_revoked_key_not_in_use_is_refused_after_its_answer_expires(clock: Clock) -> None:
    store = KeyStore()
    keys = KnownApiKeys(store.authenticate, store.user_of_key)

    async def scenario() -> None:
        assert await caller(keys) == "alice"
        store.revoked = True
        clock.now += KEY_CACHE_SECONDS
        assert await caller(keys) == 401
        assert store.lookups == 2

    asyncio.run(scenario())


def test_a_key_issued_by_this_process_is_known_without_a_lookup(clock: Clock) -> None:
    store, found = KeyStore(), []
    keys = KnownApiKeys(store.authenticate, store.user_of_key, found.append)
    keys.learn(KEY, "alice")
    assert found == ["alice"], "the user's limits and account read at the key's issue"
    assert asyncio.run(caller(keys)) == "alice"
    assert store.lookups == 0
