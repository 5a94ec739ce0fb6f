"""Failed authentications: capped per client address, and a wrong key is looked up in the event store once."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from fastapi.security import HTTPAuthorizationCredentials

from application.mediatasks import hash_api_key
from infrastructure.api.api_keys import KnownApiKeys
from infrastructure.api.deps import current_user
from infrastructure.api.errors import ApiError
from infrastructure.api.limits import FailedAuthentications


class CountingApp:
    def __init__(self) -> None:
        self.lookups = 0

    def authenticate(self, api_key: str) -> str | None:
        return self.user_of_key(hash_api_key(api_key))

    def user_of_key(self, key_hash: str) -> str | None:
        self.lookups += 1
        return "alice" if key_hash == hash_api_key("mt_good") else None


def request_from(address: str, failures: FailedAuthentications, keys: KnownApiKeys) -> SimpleNamespace:
    state = SimpleNamespace(api_keys=keys, auth_failures=failures)
    return SimpleNamespace(app=SimpleNamespace(state=state), client=SimpleNamespace(host=address))


def bearer(key: str) -> HTTPAuthorizationCredentials:
    return HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)


def test_a_repeated_wrong_key_reaches_the_event_store_once_and_the_cap_stops_all_lookups() -> None:
    async def scenario() -> None:
        app = CountingApp()
        cache = KnownApiKeys(app.authenticate, app.user_of_key)
        failures = FailedAuthentications(per_minute=5, delay_seconds=0)
        attacker = request_from("203.0.113.1", failures, cache)
        for _ in range(3):
            with pytest.raises(ApiError) as refused:
                await current_user(attacker, bearer("mt_wrong"))  # type: ignore[arg-type]
            assert refused.value.status == 401
        assert app.lookups == 1, "a key known to be wrong is not looked up again"
        for i in range(2):
            with pytest.raises(ApiError):
                await current_user(attacker, bearer(f"mt_other{i}"))  # type: ignore[arg-type]
        assert app.lookups == 3
        for i in range(50):
            with pytest.raises(ApiError) as capped:
                await current_user(attacker, bearer(f"mt_more{i}"))  # type: ignore[arg-type]
            assert capped.value.status == 429 and capped.value.code == "too_many_failed_authentications"
        assert app.lookups == 3, "over the cap, nothing reaches the event store"
        assert (
            await current_user(
                request_from("203.0.113.2", failures, cache),  # type: ignore[arg-type]
                bearer("mt_good"),
            )
            == "alice"
        )

    asyncio.run(scenario())
