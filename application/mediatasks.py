"""The mediatasks application: every use case is a method here (get, decide, save)."""

from __future__ import annotations

import hashlib
import random
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol, cast, runtime_checkable
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import BaseAggregate
from eventsourcing.persistence import IntegrityError, Notification, Recording, StoredEvent

from application.account_batches import AccountBatches, Answer, Batch
from domain.credits import ApiKey, CreditAccount, check_user_id
from domain.errors import ConcurrentUpdates, IdempotencyKeyReused, TaskNotFound, UserAlreadyExists, UserNotFound
from domain.media_options import check_media_options
from domain.platforms import validate_submission_url
from domain.tasks import (
    ALREADY_PROCESSING,
    EXTRACTED,
    FAILED,
    OUTPUT_TYPES,
    MediaTask,
    check_languages,
    check_output_type,
)
from domain.vocabulary import AttemptOutcome

API_KEY_PREFIX = "mt_"
# The defaults, defined here once (infrastructure/settings.py takes its defaults from these).
DEFAULT_PRICES = {"subtitles": 1, "video": 2, "video_and_subtitles": 3, "audio": 1}
DEFAULT_LEASE_SECONDS = 600.0
DEFAULT_MAX_ATTEMPTS = 3
CONFLICT_RETRIES = 200
ACCOUNT_SNAPSHOT_INTERVAL = 200


def hash_api_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


@dataclass(frozen=True)
class Submission:
    task_id: UUID
    status: str
    credits_charged: int
    created: bool
    notification_id: int | None


@dataclass(frozen=True)
class NewUser:
    user_id: str
    api_key: str
    balance: int
    notification_id: int | None


@dataclass(frozen=True)
class AttemptDecision:
    outcome: AttemptOutcome
    attempt: int
    lease_remaining: float = 0.0
    notification_id: int | None = None
    task: MediaTask | None = None  # as saved, when this delivery started an attempt


@dataclass(frozen=True)
class HistoryEntry:
    type: str
    version: int
    timestamp: datetime
    data: dict[str, Any]


class AggregatesCollected(ProcessingEvent[UUID]):
    """eventsourcing's ProcessingEvent, an aggregate told apart by its class: its `collect_events` asks
    `isinstance` of two runtime-checkable protocols for every object saved, the slowest part of a save
    of many small aggregates (tens of µs each)."""

    def collect_events(self, *objs: Any, **kwargs: Any) -> None:
        others = []
        for obj in objs:
            if isinstance(obj, BaseAggregate):
                self.events.extend(obj.collect_events())
                self.aggregates[obj.id] = obj
            elif obj is not None:
                others.append(obj)
        super().collect_events(*others, **kwargs)


class MediaTasks(Application[UUID]):
    """Commands and queries on tasks and credit accounts, all backed by the event store."""

    name = "MediaTasks"
    clock: Callable[[], datetime] = staticmethod(utc_now)
    snapshotting_intervals = {CreditAccount: ACCOUNT_SNAPSHOT_INTERVAL}

    def __init__(self, env: Any = None) -> None:
        super().__init__(env)
        self._account_batches = AccountBatches(self, self._conflict_retries)
        self._recorder_of_groups = self.recorder if isinstance(self.recorder, InsertsEach) else None
        self._recorder_of_positions = self.recorder if isinstance(self.recorder, ReadsEventsAfter) else None
        self.prices: dict[str, int] = {
            output_type: int(self.env.get(f"PRICE_{output_type.upper()}") or DEFAULT_PRICES[output_type])
            for output_type in OUTPUT_TYPES
        }
        self.lease = timedelta(seconds=float(self.env.get("LEASE_SECONDS") or DEFAULT_LEASE_SECONDS))
        self.max_attempts = int(self.env.get("MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]:
        """`Application.save` (eventsourcing 9.5's steps), its aggregates' events collected by
        `AggregatesCollected`."""
        processing_event = AggregatesCollected()
        processing_event.collect_events(*objs, **kwargs)
        recordings = self._record(processing_event)
        self._recorded(processing_event, recordings)
        return recordings

    def _recorded(self, processing_event: ProcessingEvent[UUID], recordings: list[Recording[UUID]]) -> None:
        """What `Application.save` does after recording: snapshots due, then the notifications."""
        self._take_snapshots(processing_event)
        self._notify(recordings)
        self.notify(processing_event.events)  # eventsourcing's deprecated hook, called as its save calls it

    def save_each(self, *groups: Sequence[Any]) -> list[list[Recording[UUID]] | IntegrityError]:
        """Each group of aggregates saved on its own, all in one transaction when the recorder can
        (`InsertsEach`): a group that conflicts gets its IntegrityError and writes nothing, the others
        are saved. Otherwise one `save` of them all: a conflict is every group's."""
        recorder = self._recorder_of_groups
        if recorder is None:
            try:
                recordings = self.save(*(obj for group in groups for obj in group))
            except IntegrityError as error:
                return [error] * len(groups)
            return [_recordings_of(group, recordings) for group in groups]
        collected = []
        for group in groups:
            processing_event = AggregatesCollected()
            processing_event.collect_events(*group)
            collected.append(processing_event)
        mapper = self.events.mapper
        stored = [[mapper.to_stored_event(e) for e in p.events] for p in collected]
        outcomes: list[list[Recording[UUID]] | IntegrityError] = []
        for processing_event, stored_events, ids in zip(
            collected, stored, recorder.insert_events_each(stored), strict=True
        ):
            if isinstance(ids, IntegrityError):
                outcomes.append(ids)
                continue
            recordings = [
                Recording(d, Notification(s.originator_id, s.originator_version, s.topic, s.state, n))
                for d, s, n in zip(processing_event.events, stored_events, ids, strict=True)
            ]
            if self.repository.cache and not self.repository.fastforward:  # as `Application._record`
                for aggregate_id, aggregate in processing_event.aggregates.items():
                    self.repository.cache.put(aggregate_id, aggregate)
            self._recorded(processing_event, recordings)
            outcomes.append(recordings)
        return outcomes

    def bring_forward(self, aggregates: Sequence[BaseAggregate[UUID]]) -> None:
        """Each aggregate (as this process holds it, at some stored version) given the events stored
        after its version: one read for all when the recorder can (`ReadsEventsAfter`)."""
        recorder = self._recorder_of_positions
        if recorder is None:
            for aggregate in aggregates:
                for e in self.repository.event_store.get(aggregate.id, gt=aggregate.version):
                    cast(Any, e).mutate(aggregate)
            return
        by_id = {a.id: a for a in aggregates}
        for stored in recorder.select_events_after([(a.id, a.version) for a in aggregates]):
            cast(Any, self.mapper.to_domain_event(stored)).mutate(by_id[cast(UUID, stored.originator_id)])

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """A snapshot of each aggregate whose new events reach a multiple of its interval, taken from the
        aggregate as just saved (the state its recorded events make): eventsourcing's reads it back from
        the store first, i.e. the last snapshot and up to an interval of events decoded and replayed
        (5-6 % of the API process's CPU for one busy account)."""
        if self.snapshots is None:
            return
        due: dict[UUID, Any] = {}
        for event in processing_event.events:
            aggregate: Any = processing_event.aggregates.get(event.originator_id)
            interval = self.snapshotting_intervals.get(type(aggregate))
            if interval is not None and event.originator_version % interval == 0:
                due[event.originator_id] = aggregate
        if due:
            snapshot_class: Any = self.snapshot_class
            self.snapshots.put([getattr(type(a), "Snapshot", snapshot_class).take(a) for a in due.values()])

    # Users and credits ------------------------------------------------------------

    def create_user(self, user_id: str, credits: int = 0, reason: str = "initial grant") -> NewUser:
        check_user_id(user_id)
        account = CreditAccount.open(user_id)
        if credits:
            account.grant(credits, reason)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        key = ApiKey.issue(user_id, hash_api_key(api_key), api_key[:8])
        try:
            recordings = self.save(account, key)
        except IntegrityError:
            raise UserAlreadyExists(f"User {user_id!r} exists already.", user_id=user_id) from None
        self._account_batches.remember(account)  # its first submission decides from it, with no read
        return NewUser(user_id, api_key, account.balance, _last_id(recordings))

    def issue_api_key(self, user_id: str) -> str:
        self.get_account(user_id)
        api_key = API_KEY_PREFIX + secrets.token_urlsafe(32)
        self.save(ApiKey.issue(user_id, hash_api_key(api_key), api_key[:8]))
        return api_key

    def authenticate(self, api_key: str) -> str | None:
        """The user an API key belongs to, or None."""
        if not api_key.startswith(API_KEY_PREFIX) or len(api_key) > 200:
            return None
        return self.user_of_key(hash_api_key(api_key))

    def user_of_key(self, key_hash: str) -> str | None:
        """The user of the API key of this hash, or None (no such key, or revoked)."""
        try:
            key: ApiKey = self.repository.get(ApiKey.id_for(key_hash))
        except AggregateNotFoundError:
            return None
        return None if key.revoked else key.user_id

    def hold_account(self, user_id: str) -> None:
        """Read the user's account for its next batch unless this process holds it already (blocking: e.g.
        when its API key is looked up, so that batch reads no account)."""
        if not self._account_batches.holds(user_id):
            self._account_batches.remember(self.get_account(user_id))

    def get_account(self, user_id: str) -> CreditAccount:
        try:
            return self.repository.get(CreditAccount.id_for(check_user_id(user_id)))
        except AggregateNotFoundError:
            raise UserNotFound(f"There is no user {user_id!r}.", user_id=user_id) from None

    def grant_credits(self, user_id: str, amount: int, reason: str = "") -> tuple[int, int | None]:
        """Returns the new balance and the notification id of the grant."""

        def decide(account: CreditAccount, batch: Batch) -> Answer[tuple[int, int | None]]:
            account.grant(amount, reason)
            balance = account.balance
            return lambda last_id: (balance, last_id)

        return self._account_batches.run(check_user_id(user_id), decide)

    # Tasks ------------------------------------------------------------------------

    def submit(
        self,
        user_id: str,
        url: str,
        output_type: str,
        languages: list[str] | None = None,
        idempotency_key: str | None = None,
        trace_context: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Submission:
        """Create a task and charge for it in one transaction; idempotent by key.

        `options`: max_height, video_codec, mute, audio_format (domain/media_options.py).
        """
        decide = self._submission(user_id, url, output_type, languages, idempotency_key, trace_context, options)
        return self._account_batches.run(user_id, decide)

    async def submit_async(
        self,
        user_id: str,
        url: str,
        output_type: str,
        languages: list[str] | None = None,
        idempotency_key: str | None = None,
        trace_context: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
    ) -> Submission:
        """`submit` for a caller on an event loop: it awaits the decision and the commit, holding no thread."""
        decide = self._submission(user_id, url, output_type, languages, idempotency_key, trace_context, options)
        return await self._account_batches.run_async(user_id, decide)

    def _submission(
        self,
        user_id: str,
        url: str,
        output_type: str,
        languages: list[str] | None,
        idempotency_key: str | None,
        trace_context: dict[str, str] | None,
        options: dict[str, Any] | None,
    ) -> Callable[[CreditAccount, Batch], Answer[Submission]]:
        """The submission's checks (raised now) and its decision against the account (made in a batch)."""
        platform, normalized_url = validate_submission_url(url)
        check_output_type(output_type)
        languages = check_languages(languages)
        options = check_media_options(options)
        may_exist = idempotency_key is not None  # a fresh random key cannot name an existing task
        # A key of 128 random bits names no earlier task; not from os.urandom (a system call per request).
        idempotency_key = idempotency_key or f"{random.getrandbits(128):032x}"
        task_id = MediaTask.id_for(user_id, idempotency_key)

        def decide(account: CreditAccount, batch: Batch) -> Answer[Submission]:
            # A re-run after a lost race needs no read either: the rival's save was of the account, and
            # the refused save wrote nothing, so a task of a random key still does not exist.
            existing = batch.find_task(task_id) if may_exist or task_id in batch.tasks else None
            if existing is not None:
                if existing.user_id != user_id or not existing.same_request(
                    normalized_url, output_type, languages, options
                ):
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used for a different request.", task_id=str(task_id)
                    )
                replay = Submission(task_id, existing.status, existing.credits, False, None)
                return lambda last_id: replay
            price = self.prices[output_type]
            task = MediaTask.start(
                user_id=user_id,
                idempotency_key=idempotency_key,
                url=normalized_url,
                platform=platform.name,
                output_type=output_type,
                languages=languages,
                credits=price,
                requested_at=self.clock(),
                max_attempts=self.max_attempts,
                trace_context=trace_context,
                options=options,
            )
            account.charge(task.id, task.charge_attempt, price)
            batch.add(task)
            return lambda last_id: Submission(task.id, task.status, price, True, last_id)

        return decide

    def retry_task(self, user_id: str, task_id: UUID) -> Submission:
        """A user's retry of a failed task: charges the price again."""

        def decide(account: CreditAccount, batch: Batch) -> Answer[Submission]:
            task = batch.find_task(task_id)
            if task is None or task.user_id != user_id:
                raise TaskNotFound("There is no such task.", task_id=str(task_id))
            price = self.prices[task.output_type]
            first_attempt = task.retry(credits=price, requested_at=self.clock())
            account.charge(task.id, first_attempt, price)
            batch.add(task)
            return lambda last_id: Submission(task.id, task.status, price, True, last_id)

        return self._account_batches.run(user_id, decide)

    def _task_version(self, task_id: UUID) -> int | None:
        """The task's version in the store, read afresh (not from the aggregate cache)."""
        events = self.recorder.select_events(task_id, desc=True, limit=1)
        return events[0].originator_version if events else None

    def begin_attempt(self, task_id: UUID, worker_id: str, delivery: dict[str, Any] | None = None) -> AttemptDecision:
        """The history-derived idempotency decision for one delivery of a task."""
        task = self.get_task(task_id)
        now = self.clock()
        outcome = task.begin_attempt(now=now, lease=self.lease, worker_id=worker_id, delivery=delivery)
        if not task.pending_events:
            return AttemptDecision(outcome, task.attempt, task.lease_remaining(now, self.lease))
        try:
            recordings = self.save(task)
        except IntegrityError:
            current = self.get_task(task_id)
            remaining = current.lease_remaining(self.clock(), self.lease) or self.lease.total_seconds()
            return AttemptDecision(ALREADY_PROCESSING, current.attempt, remaining)
        return AttemptDecision(outcome, task.attempt, self.lease.total_seconds(), _last_id(recordings), task)

    def report_progress(
        self, task_id: UUID, attempt: int, stage: str, progress: int, details: dict[str, Any] | None = None
    ) -> int | None:
        return self._update_task(
            task_id, lambda t: t.report_progress(attempt=attempt, stage=stage, progress=progress, details=details)
        )

    def complete(self, task_id: UUID, attempt: int, result: dict[str, Any]) -> int | None:
        return self._update_task(task_id, lambda t: t.complete(attempt=attempt, result=result))

    def fail(
        self,
        task_id: UUID,
        attempt: int,
        code: str,
        message: str,
        retryable: bool,
        context: dict[str, Any] | None = None,
        last_delivery: bool = False,
    ) -> bool:
        """Record a failed attempt; True when the failure is terminal (the refund follows).

        `last_delivery`: no delivery of this task will follow, so a retryable failure is terminal too.
        """
        outcome: list[bool] = []
        self._update_task(
            task_id,
            lambda t: outcome.append(
                t.fail(
                    attempt=attempt,
                    code=code,
                    message=message,
                    retryable=retryable,
                    context=context,
                    last_delivery=last_delivery,
                )
            ),
        )
        return outcome[-1]

    def next_attempt_due(self, task_id: UUID) -> int | None:
        """The attempt a delivery would begin now (a takeover of an expired lease, or a retry nobody
        delivered), or None when a delivery would begin none: finished, or an attempt holds its lease."""
        task = self._find_task(task_id)
        if task is None or task.status == EXTRACTED or (task.status == FAILED and task.terminal_failure):
            return None
        if task.lease_remaining(self.clock(), self.lease) > 0:
            return None
        return task.attempt + 1

    def get_task(self, task_id: UUID, user_id: str | None = None) -> MediaTask:
        task = self._find_task(task_id)
        if task is None or (user_id is not None and task.user_id != user_id):
            raise TaskNotFound("There is no such task.", task_id=str(task_id))
        return task

    def task_history(self, task_id: UUID, user_id: str | None = None) -> list[HistoryEntry]:
        """Every event of the task, in order (one read: the first event says whose task it is)."""
        events = list(self.repository.event_store.get(task_id))
        if (
            not events
            or not isinstance(events[0], MediaTask.Started)  # type: ignore[attr-defined]  # made by @event at runtime
            or (user_id is not None and events[0].user_id != user_id)
        ):
            raise TaskNotFound("There is no such task.", task_id=str(task_id))
        return [_history_entry(e) for e in events]

    def task_at(self, task_id: UUID, when: datetime) -> MediaTask | None:
        """The task as it was at a past moment (None if it did not exist yet): its events up to then, folded."""
        task: MediaTask | None = None
        for stored in self.repository.event_store.get(task_id):
            e = cast(MediaTask.Event, stored)  # the store's type is the protocol; these are MediaTask's events
            if e.timestamp > when:
                break
            task = e.mutate(task)
        return task if isinstance(task, MediaTask) else None

    # Internals --------------------------------------------------------------------

    def _find_task(self, task_id: UUID) -> MediaTask | None:
        try:
            task: object = self.repository.get(task_id)
        except AggregateNotFoundError:
            return None
        return task if isinstance(task, MediaTask) else None

    def _update_task(self, task_id: UUID, decide: Callable[[MediaTask], None]) -> int | None:
        for _ in self._conflict_retries():
            task = self.get_task(task_id)
            decide(task)
            try:
                return _last_id(self.save(task))
            except IntegrityError:
                continue
        raise ConcurrentUpdates("Too many concurrent updates; try again.")

    @staticmethod
    def _conflict_retries() -> Iterator[int]:
        """Optimistic concurrency: re-read and decide again after a lost race, with jitter."""
        for n in range(CONFLICT_RETRIES):
            if n:
                time.sleep(random.uniform(0, min(0.05, 0.002 * n)))
            yield n


@runtime_checkable
class InsertsEach(Protocol):
    """A recorder that inserts several groups of events in one transaction, each group's outcome its own."""

    def insert_events_each(self, groups: Sequence[Sequence[StoredEvent]]) -> list[list[int] | IntegrityError]: ...


@runtime_checkable
class ReadsEventsAfter(Protocol):
    """A recorder that reads the events of several aggregates after a version of each, in one read."""

    def select_events_after(self, positions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]: ...


def _recordings_of(group: Sequence[Any], recordings: list[Recording[UUID]]) -> list[Recording[UUID]]:
    ids = {obj.id for obj in group}
    return [r for r in recordings if r.domain_event.originator_id in ids]


def _last_id(recordings: list[Recording[UUID]]) -> int | None:
    ids = [r.notification.id for r in recordings if r.notification.id is not None]
    return max(ids) if ids else None


def _history_entry(domain_event: Any) -> HistoryEntry:
    data = {
        k: v
        for k, v in domain_event.__dict__.items()
        if k not in ("originator_id", "originator_version", "timestamp", "originator_topic")
    }
    return HistoryEntry(
        type=type(domain_event).__name__,
        version=domain_event.originator_version,
        timestamp=domain_event.timestamp,
        data=data,
    )
