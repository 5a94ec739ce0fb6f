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
never waits for that read; one who comes back after a pause does). Those background reads queue for
one job in the thread pool at a time (`QueuedReads`), so a request that asks for one hops to no thread.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Annotated, Any, NamedTuple

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage, Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from application.mediatasks import hash_api_key
from infrastructure.api.deps import AppDep, Credentials, current_user
from infrastructure.api.errors import ApiError
from infrastructure.postgres.user_limits import PostgresUserLimits, UserLimits, active_task_count

logger = logging.getLogger(__name__)

SUBMISSIONS, READS = "submissions", "reads"
OVERRIDES_CACHE_SECONDS = 5.0
OVERRIDES_READ_AHEAD_SECONDS = 1.0  # cached overrides are read again in the background this long before expiry
SWEEP_SECONDS = 1.0
ACTIVE_COUNT_SECONDS = 1.0  # a user's active tasks, read well below the cap, are trusted this long
RATE_LIMIT_HEADERS = (
    "rate_limit_headers"  # the request's RateLimit headers, in its scope's state (infrastructure/api/edge.py)
)


_parsed = functools.lru_cache(maxsize=1024)(parse)  # the same few rates, parsed once each


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
        self._cache: dict[str, tuple[UserLimits, float]] = {}
        self._active: dict[str, tuple[int, float]] = {}  # user → (tasks active, read again after)
        self._refreshing: dict[str, int] = {}  # user → submissions counted while their fresh read runs
        self._reading_overrides: dict[str, object] = {}  # user → the background read of their overrides under way
        self._lock = threading.Lock()
        self.background = QueuedReads()  # the reads ahead of active counts and overrides

    def limits_of(self, user_id: str) -> UserLimits:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        found = self.overrides.get(user_id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[user_id] = (found, now + OVERRIDES_CACHE_SECONDS)
        return found

    def overrides_due(self, user_id: str) -> object | None:
        """A claim on reading the user's overrides again in the background (`read_overrides_ahead`) when
        their cached copy expires within OVERRIDES_READ_AHEAD_SECONDS and nobody reads them yet; else None.
        A user who keeps sending requests then never waits for that read."""
        with self._lock:
            cached = self._cache.get(user_id)
            if cached is None or cached[1] - time.monotonic() > OVERRIDES_READ_AHEAD_SECONDS:
                return None
            if user_id in self._reading_overrides:
                return None
            claim = self._reading_overrides[user_id] = object()
            return claim

    def read_overrides_ahead(self, user_id: str, claim: object) -> None:
        """Read the user's overrides for the next OVERRIDES_CACHE_SECONDS; kept unless `forget` came first."""
        try:
            found = self.overrides.get(user_id)
        finally:
            with self._lock:
                still_ours = self._reading_overrides.get(user_id) is claim
                if still_ours:
                    del self._reading_overrides[user_id]
        if still_ours:
            with self._lock:
                self._cache[user_id] = (found, time.monotonic() + OVERRIDES_CACHE_SECONDS)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._cache.pop(user_id, None)
            self._active.pop(user_id, None)
            self._reading_overrides.pop(user_id, None)  # a read under way may have the old overrides: dropped

    def counts_without_io(self, kind: str, user_id: str) -> bool:
        """Whether counting this request needs no database or Redis (then the event loop does it)."""
        if not self.in_memory:
            return False
        with self._lock:
            limits = self._cache.get(user_id)
            active = self._active.get(user_id)
        if limits is None or limits[1] <= time.monotonic():
            return False
        return kind != SUBMISSIONS or (active is not None and self._far_below_cap(user_id, active[0]))

    def active_count_due(self, user_id: str) -> bool:
        """Whether the user's active tasks, counted from memory, are due a fresh read (claimed by the caller)."""
        with self._lock:
            known = self._active.get(user_id)
            if known is None or known[1] > time.monotonic() or user_id in self._refreshing:
                return False
            self._refreshing[user_id] = 0
            return True

    def refresh_active_count(self, user_id: str) -> None:
        """Read the user's active tasks afresh (in the background: no request waits for it). Submissions
        counted while the read runs are added to it: the read model may not have them yet (an overcount
        only sends the next submission to a fresh read sooner)."""
        try:
            active = self.active_tasks(user_id)
        finally:
            with self._lock:
                added = self._refreshing.pop(user_id, 0)
        with self._lock:
            self._active[user_id] = (active + added, time.monotonic() + ACTIVE_COUNT_SECONDS)

    def _far_below_cap(self, user_id: str, active: int) -> bool:
        return 2 * (active + 1) <= (self.limits_of(user_id).max_active_tasks or self.max_active_tasks)

    def item(self, kind: str, user_id: str) -> RateLimitItem:
        limits = self.limits_of(user_id)
        override = limits.rate_limit_submissions if kind == SUBMISSIONS else limits.rate_limit_reads
        return _parsed(override or self.defaults[kind])

    def hit(self, kind: str, key_id: str, user_id: str) -> dict[str, str]:
        """Count one request of `key_id`; its RateLimit headers, or a 429 ApiError carrying them."""
        item = self.item(kind, user_id)
        allowed = self.limiter.hit(item, kind, key_id)
        stats = self.limiter.get_window_stats(item, kind, key_id)
        reset = max(0, math.ceil(stats.reset_time - time.time()))
        window = item.get_expiry()
        headers = {
            "RateLimit-Policy": f'"{kind}";q={item.amount};w={window}',
            "RateLimit": f'"{kind}";r={max(0, stats.remaining)};t={reset}',
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
        with self._lock:
            known = self._active.get(user_id)
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
        with self._lock:
            if len(self._active) > 10_000:
                self._active.clear()
            self._active[user_id] = (active + 1, until)
            if user_id in self._refreshing:
                self._refreshing[user_id] += 1

    def active_tasks(self, user_id: str) -> int:
        return active_task_count(self.views.current() if hasattr(self.views, "current") else self.views, user_id)


def _kind(request: Request) -> str:
    path = request.url.path.rstrip("/")
    if request.method == "POST" and (
        path == "/v1/tasks" or (path.startswith("/v1/tasks/") and path.endswith("/retry"))
    ):
        return SUBMISSIONS
    return READS


async def rate_limited(request: Request, app: AppDep, credentials: Credentials) -> None:
    """Count this request against the caller's API key; over the limit (or the active cap): 429.

    A request without an API key (a stream token, or none: then the route answers 401) is not counted.
    """
    if credentials is not None:
        await _counted_caller(request, app, credentials, _kind(request))


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
        await current_user(request, app, credentials)  # raises 401
    user_id = await _counted_caller(request, app, credentials, SUBMISSIONS)
    return Submitter(user_id, app, state.webhooks, state.webhook_url_policy)


async def _counted_caller(request: Request, app: Any, credentials: Any, kind: str) -> str:
    user_id = await current_user(request, app, credentials)  # the failed-authentication cap applies first
    key_id = hash_api_key(credentials.credentials)[:32]
    limits: RequestLimits = request.app.state.request_limits
    if limits.counts_without_io(kind, user_id):
        _count(request, kind, key_id, user_id)
        if kind == SUBMISSIONS and limits.active_count_due(user_id):
            _read_in_background(limits.background, functools.partial(limits.refresh_active_count, user_id))
        if (claim := limits.overrides_due(user_id)) is not None:
            _read_in_background(limits.background, functools.partial(limits.read_overrides_ahead, user_id, claim))
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


def _read_in_background(reads: QueuedReads, read: Callable[[], None]) -> None:
    if reads.add(read):
        asyncio.get_running_loop().run_in_executor(None, reads.run)


class QueuedReads:
    """Background reads, run one after another by one job in the thread pool: a request that asks for one
    while the job runs only queues it (one thread hop per round of reads, not one per read)."""

    def __init__(self) -> None:
        self._queue: deque[Callable[[], None]] = deque()
        self._running = False
        self._lock = threading.Lock()

    def add(self, read: Callable[[], None]) -> bool:
        """Queue `read`; True when the caller is to start `run` in the thread pool (no job runs now)."""
        with self._lock:
            self._queue.append(read)
            if self._running:
                return False
            self._running = True
            return True

    def run(self) -> None:
        """Run the queued reads until none is left; a failed read is logged and the next one runs."""
        while True:
            with self._lock:
                if not self._queue:
                    self._running = False
                    return
                read = self._queue.popleft()
            try:
                read()
            except Exception as error:  # noqa: BLE001 - a background read must not stop the others
                logger.warning("active tasks or limits not read afresh: %s", error)


RateLimited = Depends(rate_limited)
SubmitterDep = Annotated[Submitter, Depends(submitter)]


async def get_request_limits(request: Request) -> RequestLimits:
    return request.app.state.request_limits


RequestLimitsDep = Annotated[RequestLimits, Depends(get_request_limits)]
