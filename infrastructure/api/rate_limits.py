"""Per-API-key request rates and a per-user cap on active tasks, with per-user overrides.

Rates are counted by the `limits` library (moving window) in its memory storage (one process)
or in Redis (`MEDIATASKS_RATE_LIMIT_STORAGE=redis://…`), where every uvicorn worker and machine
shares the counters. Submissions (`POST /v1/tasks`, retries) and all other authenticated requests
are limited separately. Every limited answer carries the IETF `RateLimit-Policy` and `RateLimit`
headers (draft-ietf-httpapi-ratelimit-headers); over a limit the answer is 429 `rate_limited` with
`Retry-After`, decided before the route runs, so nothing is charged or written. The active-task cap
counts the user's tasks not yet extracted or failed in the read model (it lags the log by moments).
Well below the cap (under half of it) the count is kept in memory, each submission of this process
adding one, and read again in the background about once a second per user (no request waits for
it); nearer the cap it is read for every submission, and a refusal always comes from a fresh read. With the memory storage and the user's limits and count
at hand, a request is counted on the event loop (no thread); otherwise in the thread pool. A user's overrides are
cached for 5 s and read again in the background in the last second of that (a user who keeps sending requests
never waits for that read; one who comes back after a pause does). A user's overrides and active tasks not
known yet are read when its API key is looked up, in the same thread job (`know`, called by
infrastructure/api/api_keys.py), so its first request counts on the event loop too. Those background reads queue for
one job in the thread pool at a time (`QueuedReads`), so a request that asks for one hops to no thread.
In the memory storage a request's hit and the window its RateLimit headers describe are one call
(`SweptMemoryStorage.hit_and_window`); in Redis, `limits`' hit and window read.
"""

from __future__ import annotations

import bisect
import functools
import math
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.storage.memory import Entry
from limits.strategies import MovingWindowRateLimiter

from infrastructure.api.deps import Credentials, authenticated, current_user
from infrastructure.api.errors import ApiError
from infrastructure.api.read_ahead import QueuedReads, ReadAhead, read_in_background
from infrastructure.postgres.user_limits import PostgresUserLimits, UserLimits, active_task_count

SUBMISSIONS, READS = "submissions", "reads"
OVERRIDES_CACHE_SECONDS = 5.0
OVERRIDES_READ_AHEAD_SECONDS = 1.0  # cached overrides are read again in the background this long before expiry
SWEEP_SECONDS = 1.0
ACTIVE_COUNT_SECONDS = 1.0  # a user's active tasks, read well below the cap, are trusted this long
RATE_LIMIT_HEADERS = (
    "rate_limit_headers"  # the request's RateLimit headers, in its scope's state (infrastructure/api/edge.py)
)


_parsed = functools.lru_cache(maxsize=1024)(parse)  # the same few rates, parsed once each


@functools.lru_cache(maxsize=1024)
def _policy(kind: str, amount: int, window: int) -> str:
    """The RateLimit-Policy header of a rate (the same few, formatted once each)."""
    return f'"{kind}";q={amount};w={window}'


class SweptMemoryStorage(MemoryStorage):
    """`limits`' memory storage, its expired entries swept at most once a second.

    Its own sweep is a `threading.Timer` of 10 ms started again by the first hit after the last one
    ended: a new thread for nearly every request under load (and a walk over every key each time).
    A moving window decides from each entry's own time, so sweeping later only frees memory later.
    """

    def _MemoryStorage__schedule_expiry(self) -> None:  # noqa: N802 - overrides the base class's private method
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_SECONDS, self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
            self.timer.daemon = True
            self.timer.start()

    def hit_and_window(self, key: str, limit: int, expiry: int) -> tuple[bool, float, int]:
        """`acquire_entry(key, limit, expiry)` and then `get_moving_window(key, limit, expiry)` in one call
        under the key's lock: whether the hit was counted, the window's start and how many it holds."""
        if limit < 1:  # acquire_entry refuses it before anything
            return (False, *self.get_moving_window(key, limit, expiry))
        self._MemoryStorage__schedule_expiry()
        with self.locks[key]:
            events = self.events.setdefault(key, [])
            oldest_allowed = events[limit - 1] if len(events) >= limit else None
            acquired = oldest_allowed is None or oldest_allowed.atime < time.time() - expiry
            if acquired:
                events.insert(0, Entry(expiry))
            now = time.time()
            if not events:
                return acquired, now, 0
            in_window = bisect.bisect_left(events, -(now - expiry), key=lambda entry: -entry.atime)
            return acquired, events[in_window - 1].atime, in_window


def counters(uri: str) -> Storage:
    """The `limits` storage named by MEDIATASKS_RATE_LIMIT_STORAGE (memory: swept once a second)."""
    return SweptMemoryStorage() if uri.startswith("memory://") else storage_from_string(uri)


def check_rate(text: str) -> str:
    """`10/second`, `60/minute`, `1000/hour`… (the `limits` notation), or ValueError."""
    parse(text)
    return text


class RequestLimits:
    """The rate limiter and the active-task cap of one process (the counters may be shared in Redis)."""

    def __init__(self, settings: Any, overrides: PostgresUserLimits, views: Any) -> None:
        self.limiter = MovingWindowRateLimiter(counters(settings.rate_limit_storage))
        self.defaults = {SUBMISSIONS: settings.rate_limit_submissions, READS: settings.rate_limit_reads}
        self.max_active_tasks = settings.max_active_tasks
        self.overrides = overrides
        self.views = views
        self.in_memory = settings.rate_limit_storage.startswith("memory://")
        self.cached_limits = ReadAhead(overrides.get, OVERRIDES_CACHE_SECONDS, OVERRIDES_READ_AHEAD_SECONDS)
        # Submissions counted while a fresh read of the active tasks runs are added to it: the read model
        # may not have them yet (an overcount only sends the next submission to a fresh read sooner).
        self.active_counts = ReadAhead(
            self.active_tasks, ACTIVE_COUNT_SECONDS, 0.0, settle=lambda active, counted: active + counted
        )
        self.background = QueuedReads()  # the reads ahead of active counts and overrides

    def limits_of(self, user_id: str) -> UserLimits:
        cached = self.cached_limits.fresh(user_id)
        if cached is not None:
            return cached
        found = self.overrides.get(user_id)
        self.cached_limits.put(user_id, found)
        return found

    def know(self, user_id: str) -> None:
        """Read the user's overrides unless fresh and its active tasks unless known (blocking: called in the
        thread that looked up the user's API key, so the user's next request counts on the event loop)."""
        started = time.monotonic()
        if self.cached_limits.fresh(user_id) is None:
            self.cached_limits.put(user_id, self.overrides.get(user_id), started + OVERRIDES_CACHE_SECONDS)
        if self.active_counts.known(user_id) is None:
            self.active_counts.put_if_unknown(user_id, self.active_tasks(user_id), started + ACTIVE_COUNT_SECONDS)

    def forget(self, user_id: str) -> None:
        self.cached_limits.forget(user_id)
        self.active_counts.forget(user_id)

    def refreshes_due(self, kind: str, user_id: str) -> list[Callable[[], None]]:
        """The background reads this request claims: the user's overrides when they expire within
        OVERRIDES_READ_AHEAD_SECONDS (a user who keeps sending requests never waits for that read), and for
        a submission the active tasks counted in memory once ACTIVE_COUNT_SECONDS have passed."""
        due = [self.cached_limits] + ([self.active_counts] if kind == SUBMISSIONS else [])
        claimed = [(cache, cache.due(user_id)) for cache in due]
        return [functools.partial(cache.refresh, user_id, claim) for cache, claim in claimed if claim is not None]

    def counts_without_io(self, kind: str, user_id: str) -> bool:
        """Whether counting this request needs no database or Redis (then the event loop does it)."""
        if not self.in_memory:
            return False
        if self.cached_limits.fresh(user_id) is None:
            return False
        active = self.active_counts.known(user_id)
        return kind != SUBMISSIONS or (active is not None and self._far_below_cap(user_id, active[0]))

    def _far_below_cap(self, user_id: str, active: int) -> bool:
        return 2 * (active + 1) <= (self.limits_of(user_id).max_active_tasks or self.max_active_tasks)

    def item(self, kind: str, user_id: str) -> RateLimitItem:
        limits = self.limits_of(user_id)
        override = limits.rate_limit_submissions if kind == SUBMISSIONS else limits.rate_limit_reads
        return _parsed(override or self.defaults[kind])

    def hit(self, kind: str, key_id: str, user_id: str) -> dict[str, str]:
        """Count one request of `key_id`; its RateLimit headers, or a 429 ApiError carrying them."""
        item = self.item(kind, user_id)
        window = item.get_expiry()
        storage = self.limiter.storage
        if isinstance(storage, SweptMemoryStorage):  # the hit and the window's state in one call
            allowed, window_start, in_window = storage.hit_and_window(item.key_for(kind, key_id), item.amount, window)
            reset_time, remaining = window_start + window, item.amount - in_window
        else:
            allowed = self.limiter.hit(item, kind, key_id)
            reset_time, remaining = self.limiter.get_window_stats(item, kind, key_id)
        reset = max(0, math.ceil(reset_time - time.time()))
        headers = {
            "RateLimit-Policy": _policy(kind, item.amount, window),
            "RateLimit": f'"{kind}";r={max(0, remaining)};t={reset}',
        }
        if not allowed:
            retry_after = max(1, reset)
            raise ApiError(
                429,
                "rate_limited",
                f"This API key made {item.amount} {kind} in {window} s; retry after {retry_after} s.",
                {"limit": item.amount, "window_seconds": window, "retry_after": retry_after, "kind": kind},
                headers={**headers, "Retry-After": str(retry_after)},
            )
        return headers

    def check_active_tasks(self, user_id: str) -> None:
        """Refuse a submission over the user's cap; else count it as active until the next read."""
        cap = self.limits_of(user_id).max_active_tasks or self.max_active_tasks
        now = time.monotonic()
        known = self.active_counts.known(user_id)
        if known is not None and self._far_below_cap(user_id, known[0]):
            active, until = known
        else:
            active, until = self.active_tasks(user_id), now + ACTIVE_COUNT_SECONDS
        if active >= cap:
            raise ApiError(
                429,
                "too_many_active_tasks",
                f"You have {active} tasks queued or running (at most {cap}); retry when one ends.",
                {"active": active, "limit": cap},
                headers={"Retry-After": "5"},
            )
        self.active_counts.put(user_id, active + 1, until, counted=1)

    def active_tasks(self, user_id: str) -> int:
        return active_task_count(self.views.current() if hasattr(self.views, "current") else self.views, user_id)


def _kind(request: Request) -> str:
    path = request.url.path.rstrip("/")
    if request.method == "POST" and (
        path == "/v1/tasks" or (path.startswith("/v1/tasks/") and path.endswith("/retry"))
    ):
        return SUBMISSIONS
    return READS


async def rate_limited(request: Request, credentials: Credentials) -> None:
    """Count this request against the caller's API key; over the limit (or the active cap): 429.

    A request without an API key (a stream token, or none: then the route answers 401) is not counted.
    """
    if credentials is not None:
        await _counted_caller(request, credentials, _kind(request))


class Submitter(NamedTuple):
    """The caller of `POST /v1/tasks` and what its route uses."""

    user_id: str
    app: Any  # MediaTasks
    webhooks: Any  # PostgresWebhookStore
    url_policy: Any  # UrlPolicy: the SSRF guard a webhook URL passes


async def submitter(request: Request, credentials: Credentials) -> Submitter:
    """`POST /v1/tasks`'s one dependency: the caller (401 without a valid API key), its submission counted
    as `rate_limited` counts it (429 over the rate or the active-task cap)."""
    state = request.app.state
    app = state.runtime.app
    if credentials is None:
        await current_user(request, credentials)  # raises 401
    user_id = await _counted_caller(request, credentials, SUBMISSIONS)
    return Submitter(user_id, app, state.webhooks, state.webhook_url_policy)


async def _counted_caller(request: Request, credentials: Any, kind: str) -> str:
    user_id, key_hash = await authenticated(request, credentials)  # the failed-authentication cap applies first
    key_id = key_hash[:32]
    limits: RequestLimits = request.app.state.request_limits
    if limits.counts_without_io(kind, user_id):
        _count(request, kind, key_id, user_id)
        for refresh in limits.refreshes_due(kind, user_id):
            read_in_background(limits.background, refresh)
    else:
        await run_in_threadpool(_count, request, kind, key_id, user_id)
    return user_id


def _count(request: Request, kind: str, key_id: str, user_id: str) -> None:
    limits: RequestLimits = request.app.state.request_limits
    headers = limits.hit(kind, key_id, user_id)
    request.scope.setdefault("state", {})[RATE_LIMIT_HEADERS] = headers
    if kind == SUBMISSIONS:
        try:
            limits.check_active_tasks(user_id)
        except ApiError as refused:
            refused.headers = {**headers, **(refused.headers or {})}
            raise


RateLimited = Depends(rate_limited)
SubmitterDep = Annotated[Submitter, Depends(submitter)]


async def get_request_limits(request: Request) -> RequestLimits:
    return request.app.state.request_limits


RequestLimitsDep = Annotated[RequestLimits, Depends(get_request_limits)]
