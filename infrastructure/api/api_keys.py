"""Which user each API key belongs to, as this process last looked it up.

A key's answer (its user, or None: unknown or revoked) is trusted KEY_CACHE_SECONDS from the start of
its lookup, so a revoked key is refused at most that long after its revocation. A valid key in use is
looked up again in the background from KEY_READ_AHEAD_SECONDS before that (`ReadAhead`): a user who
keeps sending requests never waits for the lookup; one who comes back after a pause does. Requests
that carry a key not known (or expired) share one lookup in the thread pool, and in that same job the
user's limits and account are read (`on_found`): its first request waits for one lookup, once; none
for a key issued by this process (`learn`, at `POST /v1/admin/users`). An invalid key is not looked up
again until its answer expires.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from fastapi.concurrency import run_in_threadpool

from application.mediatasks import hash_api_key
from infrastructure.api.read_ahead import QueuedReads, ReadAhead, read_in_background

logger = logging.getLogger(__name__)

KEY_CACHE_SECONDS = 30.0
KEY_READ_AHEAD_SECONDS = 5.0


class KnownApiKeys:
    """The user of each API key (by its hash), looked up by `authenticate` (an API key → its user, or None)
    and `user_of_key` (a key's hash → the same), blocking; `on_found(user_id)` runs after a lookup that found
    the user, in its thread (a failure there is logged: the request reads what it needs itself)."""

    def __init__(
        self,
        authenticate: Callable[[str], str | None],
        user_of_key: Callable[[str], str | None],
        on_found: Callable[[str], None] = lambda user_id: None,
    ) -> None:
        self._authenticate, self._on_found = authenticate, on_found
        self._users: ReadAhead[str | None] = ReadAhead(user_of_key, KEY_CACHE_SECONDS, KEY_READ_AHEAD_SECONDS)
        self._lookups: dict[str, asyncio.Future[str | None]] = {}  # key hash → the lookup under way
        self.background = QueuedReads()

    def known(self, key_hash: str) -> tuple[str | None] | None:
        """(the key's user or None) while its answer is trusted, claiming its lookup in the background when
        it is valid and due; None: look it up (`look_up`)."""
        known = self._users.known(key_hash)
        if known is None or known[1] <= time.monotonic():
            return None
        if known[0] is not None and (claim := self._users.due(key_hash)) is not None:
            read_in_background(self.background, lambda: self._users.refresh(key_hash, claim))
        return (known[0],)

    async def look_up(self, api_key: str, key_hash: str) -> str | None:
        """The user of `api_key` (of hash `key_hash`), or None; concurrent callers with the same key share one
        lookup in the thread pool."""
        lookup = self._lookups.get(key_hash)
        if lookup is None:
            lookup = self._lookups[key_hash] = asyncio.ensure_future(
                run_in_threadpool(self._look_up, api_key, key_hash)
            )
            lookup.add_done_callback(lambda done: self._ended(key_hash, done))
        return await asyncio.shield(lookup)  # a caller that goes away cancels not the others' lookup

    def learn(self, api_key: str, user_id: str) -> None:
        """A key just issued to `user_id` in this process (blocking: `on_found` runs): its user's first
        request waits for no lookup."""
        self._users.put(hash_api_key(api_key), user_id, time.monotonic() + KEY_CACHE_SECONDS)
        self._found(user_id)

    def _ended(self, key_hash: str, lookup: asyncio.Future[str | None]) -> None:
        self._lookups.pop(key_hash, None)
        if not lookup.cancelled():
            lookup.exception()  # retrieved: every caller may have gone away

    def _look_up(self, api_key: str, key_hash: str) -> str | None:
        started = time.monotonic()
        user_id = self._authenticate(api_key)
        self._users.put(key_hash, user_id, started + KEY_CACHE_SECONDS)
        if user_id is not None:
            self._found(user_id)
        return user_id

    def _found(self, user_id: str) -> None:
        try:
            self._on_found(user_id)
        except Exception as error:  # noqa: BLE001 - authentication stands; the request reads it itself
            logger.warning("limits or account of %s not read ahead: %s", user_id, error)
