"""Commands on one account decided together: one read of the account, one transaction, one answer each.

Concurrent callers on the same account (submissions, retries, grants) in one process queue their
command; whoever takes the account's lock first drains the queue and decides every waiting command
in order against one read of the account, then saves the account with every task those commands
made or changed in one `save` (one transaction). Each caller gets its own answer: its result, or the
domain error its command raised (an error writes nothing: a command checks before it records, and
the tasks of a refused command are not saved). Across processes optimistic concurrency stays the
arbiter: a conflicting save decides that account's batch again on a fresh read.

Callers on an event loop (`run_async`, the HTTP submissions) hold no thread while they wait: a
decider thread takes every account with commands waiting, decides each account's batch and saves
them all in one transaction (the group-commit writer may add other callers' inserts to it), then
wakes each caller on its loop. While it waits for that commit, another decider (up to DECIDERS)
takes the accounts that have commands waiting by then. Each account's batch is its own part of that
transaction (`MediaTasks.save_each`): when a rival process wrote one account since, only that account's
batch is refused, decided again on a fresh read and saved in the next transaction; the others commit.
A batch's first decision starts from the account as this process last saved it (or created it: no read), unless a
rival process writes that account too (its save conflicted, or a read found the rival's events): for
CONTESTED_SECONDS such accounts are brought up to date first, all of a batch's in one read. A refusal
(not enough credits) is never answered from memory: that batch is decided again on a fresh read first.
"""

from __future__ import annotations

import asyncio
import copy
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, TypeVar, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError, Recording

from domain.credits import CreditAccount
from domain.errors import ConcurrentUpdates, DomainError
from domain.tasks import MediaTask

if TYPE_CHECKING:
    from application.mediatasks import MediaTasks

STRIPES = 256
REMEMBERED_ACCOUNTS = 10_000
DECIDERS = 2  # while one writes its commit, the other decides the next accounts; more only contend for the GIL
CONTESTED_SECONDS = 30.0  # after a rival's write is seen, the account's batches read it first for this long
DECIDER_IDLE_SECONDS = 10.0  # an idle decider thread ends; the next async caller starts another


class Batch:
    """What the commands of one batch share: the tasks they made or changed."""

    def __init__(self, app: MediaTasks) -> None:
        self._app = app
        self.tasks: dict[UUID, MediaTask] = {}

    def find_task(self, task_id: UUID) -> MediaTask | None:
        """The task as this batch left it, else as stored (changes to the latter are kept only by `add`)."""
        return self.tasks.get(task_id) or self._app._find_task(task_id)

    def add(self, task: MediaTask) -> None:
        self.tasks[task.id] = task


R = TypeVar("R")
Answer = Callable[[int | None], R]  # given the batch's last notification id, the caller's result
Decide = Callable[[CreditAccount, Batch], Answer[R]]
Saved = int | None | Literal[False] | BaseException  # one batch's save: see `AccountBatches._save`


class _Slot:
    __slots__ = ("decide", "done", "error", "on_done", "result", "user_id")

    def __init__(self, user_id: str, decide: Decide[Any], on_done: Callable[[], None] | None = None) -> None:
        self.user_id = user_id
        self.decide = decide
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None
        self.on_done = on_done  # an async caller's wake-up, called by the thread that answered it

    def finish(self, result: Any = None, error: BaseException | None = None) -> None:
        self.result, self.error, self.done = result, error, True
        if self.on_done is not None:
            self.on_done()


class _Stripe:
    __slots__ = ("lock", "pending", "queue_lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the caller deciding a batch
        self.queue_lock = threading.Lock()
        self.pending: list[_Slot] = []


class _Decided:
    """One account's batch, decided and not yet saved."""

    __slots__ = ("account", "answers", "batch", "slots")

    def __init__(self, slots: list[_Slot], account: CreditAccount, batch: Batch) -> None:
        self.slots, self.account, self.batch = slots, account, batch
        self.answers: list[tuple[_Slot, Answer[Any] | None, DomainError | None]] = []


class AccountBatches:
    def __init__(self, app: MediaTasks, retries: Callable[[], Iterator[int]]) -> None:
        self._app = app
        self._retries = retries
        self._stripes = [_Stripe() for _ in range(STRIPES)]
        # Accounts as this process last saved them (read under their stripe's lock): a batch's first
        # decision starts from here, with no read; a rival's write makes its save conflict, and the
        # batch is decided again on a fresh read.
        self._accounts: OrderedDict[str, CreditAccount] = OrderedDict()
        self._accounts_lock = threading.Lock()
        # Accounts a rival process writes too (their saves conflicted, or a fresh read found its write),
        # until when: a remembered one would be stale as often as not, so they are read before deciding.
        self._rivals: OrderedDict[str, float] = OrderedDict()
        self.rival_writes_seen = 0  # saves refused for a rival's write, and reads that found one
        # The async callers' batches: decided by one thread, every waiting account at once.
        self._waiting: set[int] = set()
        self._busy: set[int] = set()  # the stripes a decider holds now
        self._wakeup = threading.Condition()
        self._deciders = self._idle_deciders = self._decider_pid = 0

    def run(self, user_id: str, decide: Decide[R]) -> R:
        """Decide `decide` with every command waiting on this account; its answer, or its error raised."""
        stripe = self._stripes[_stripe_of(user_id)]
        slot = _Slot(user_id, decide)
        with stripe.queue_lock:
            stripe.pending.append(slot)
        with stripe.lock:
            if not slot.done:
                for user_slots in _by_user(_take(stripe)).values():
                    self._decide_and_save(user_slots)
        if slot.error is not None:
            raise slot.error
        return cast(R, slot.result)  # the result of this slot's own `decide`

    async def run_async(self, user_id: str, decide: Decide[R]) -> R:
        """`run` for a caller on an event loop: no thread waits for it. Its command is queued, and the
        decider thread decides every account with commands waiting at that moment and saves them all in
        one transaction, then wakes each caller on its loop."""
        loop = asyncio.get_running_loop()
        answered = loop.create_future()

        def wake() -> None:
            try:
                loop.call_soon_threadsafe(_settle, answered)
            except RuntimeError:  # the loop has closed: nobody waits any more
                pass

        index = _stripe_of(user_id)
        slot = _Slot(user_id, decide, wake)
        stripe = self._stripes[index]
        with stripe.queue_lock:
            stripe.pending.append(slot)
        with self._wakeup:
            self._waiting.add(index)
            if self._decider_pid != os.getpid():  # a forked child has none of its parent's threads
                self._decider_pid, self._deciders, self._idle_deciders = os.getpid(), 0, 0
                self._busy.clear()
            if self._idle_deciders == 0 and self._deciders < DECIDERS:
                self._deciders += 1
                threading.Thread(target=self._decide_waiting, name="account-batches", daemon=True).start()
            self._wakeup.notify()
        await answered
        if slot.error is not None:
            raise slot.error
        return cast(R, slot.result)

    def _decide_waiting(self) -> None:
        """A decider thread: until idle for DECIDER_IDLE_SECONDS, the accounts with async callers waiting."""
        while True:
            with self._wakeup:
                idle_until = time.monotonic() + DECIDER_IDLE_SECONDS
                # Only accounts no other decider holds: one that waited for a held account would hold the
                # rest of its accounts meanwhile (with many accounts, deciders queued behind each other).
                while not (indexes := sorted(self._waiting - self._busy)):  # sorted: locks taken in one order
                    idle = idle_until - time.monotonic()
                    if idle <= 0:
                        self._deciders -= 1
                        return
                    self._idle_deciders += 1
                    self._wakeup.wait(idle)
                    self._idle_deciders -= 1
                self._waiting.difference_update(indexes)
                self._busy.update(indexes)
            try:
                with ExitStack() as held:
                    slots: list[_Slot] = []
                    for index in indexes:
                        stripe = self._stripes[index]
                        held.enter_context(stripe.lock)
                        slots += _take(stripe)
                    if slots:
                        self._decide_and_save_together(list(_by_user(slots).values()))
            finally:
                with self._wakeup:
                    self._busy.difference_update(indexes)
                    if self._waiting:  # commands that came for these accounts meanwhile: a decider takes them
                        self._wakeup.notify()

    def _decide_and_save_together(self, groups: list[list[_Slot]]) -> None:
        """Each account's batch decided on its own and saved as its own part of one transaction: the
        batches whose save conflicted (a rival process wrote their account) are decided again on fresh
        reads and saved together again, the others are answered."""
        rerun = False
        for _ in self._retries():
            try:
                read = self._read([s[0].user_id for s in groups if rerun or self._contested(s[0].user_id)])
            except Exception:  # noqa: BLE001 - each batch then reads on its own, and fails on its own
                read = {}
            decided: list[_Decided] = []
            for slots in groups:
                try:
                    decided.append(self._decide(slots, rerun=rerun, read=read.get(slots[0].user_id)))
                except BaseException as e:  # noqa: BLE001 - every caller of the batch gets it
                    _fail(slots, e)
            try:
                outcomes = self._save(decided)
            except BaseException as e:  # noqa: BLE001 - every caller of the batch gets it
                for d in decided:
                    _fail(d.slots, e)
                return
            groups, rerun = [], True
            for d, outcome in zip(decided, outcomes, strict=True):
                if outcome is False:
                    groups.append(d.slots)
                elif isinstance(outcome, BaseException):
                    _fail(d.slots, outcome)
                else:
                    self._answer(d, outcome)
            if not groups:
                return
        for slots in groups:
            _fail(slots, ConcurrentUpdates("Too many concurrent updates; try again."))

    def _decide_and_save(self, slots: list[_Slot]) -> None:
        try:
            for n in self._retries():
                decided = self._decide(slots, rerun=n > 0)
                (saved,) = self._save([decided])
                if isinstance(saved, BaseException):
                    raise saved
                if saved is not False:
                    self._answer(decided, saved)
                    return
            raise ConcurrentUpdates("Too many concurrent updates; try again.")
        except BaseException as e:  # noqa: BLE001 - every caller of the batch gets it
            _fail(slots, e)

    def _decide(
        self, slots: list[_Slot], rerun: bool, fresh: bool = False, read: CreditAccount | None = None
    ) -> _Decided:
        """One decision of the batch (each command's answer or refusal), not saved yet.

        From `read` (the account as stored now) if given; else from the remembered account unless
        `rerun`, `fresh` or the account is contested: a save checks what was accepted, but nothing
        checks a refusal, so one made from memory is made again on a fresh read."""
        user_id = slots[0].user_id
        remembered = None
        if read is not None:
            account = read
        elif rerun or fresh or self._contested(user_id) or (remembered := self._remembered(user_id)) is None:
            account = self._read([user_id])[user_id]
        else:
            account = remembered
        decided = _Decided(slots, account, Batch(self._app))
        for s in slots:
            try:
                decided.answers.append((s, s.decide(account, decided.batch), None))
            except DomainError as e:
                decided.answers.append((s, None, e))
        if remembered is not None and any(error is not None for _, _, error in decided.answers):
            return self._decide(slots, rerun, fresh=True)
        return decided

    def _save(self, decided: list[_Decided]) -> list[Saved]:
        """The batches' tasks and accounts in one transaction, each batch's save its own: for each, its
        last notification id (None when it is unknown or it saved nothing), False when a rival's save
        won (decide again), or the error of a save that did not happen."""
        outcomes: list[Saved] = [None] * len(decided)
        saving = [(i, d) for i, d in enumerate(decided) if d.account.pending_events]
        if not saving:
            return outcomes
        # The account last in each group: its last event's position is the group's (read-your-writes waits on it).
        groups = [(*d.batch.tasks.values(), d.account) for _, d in saving]
        try:
            if len(groups) == 1:
                try:
                    saved: list[list[Recording[UUID]] | IntegrityError] = [self._app.save(*groups[0])]
                except IntegrityError as e:
                    saved = [e]
            else:
                saved = self._app.save_each(*groups)
        except (OperationalError, InterfaceError) as e:
            # The connection may have been lost during COMMIT: a batch's save may have happened. Re-read.
            for i, d in saving:
                self._forget(d.account.user_id)
                tasks = list(d.batch.tasks.values())
                if not tasks or self._app._task_version(tasks[0].id) != tasks[0].version:
                    outcomes[i] = e
            return outcomes
        ids = [r.notification.id for rs in saved if not isinstance(rs, IntegrityError) for r in rs]
        last_id = max((i for i in ids if i is not None), default=None)  # the transaction's, as one save's
        for (i, d), recordings in zip(saving, saved, strict=True):
            if isinstance(recordings, IntegrityError):  # the remembered account stays: as stored, not current
                self._contest(d.account.user_id)
                outcomes[i] = False
            else:
                self._remember(d.account)
                outcomes[i] = last_id
        return outcomes

    @staticmethod
    def _answer(decided: _Decided, last_id: int | None) -> None:
        for s, answer, error in decided.answers:
            if error is not None:
                s.finish(error=error)
            else:
                assert answer is not None
                s.finish(answer(last_id))

    def _remembered(self, user_id: str) -> CreditAccount | None:
        with self._accounts_lock:
            account = self._accounts.get(user_id)
            if account is not None:
                self._accounts.move_to_end(user_id)
        return _copy_of(account) if account is not None else None  # a decision may be refused: a copy

    def holds(self, user_id: str) -> bool:
        """Whether this process holds the account (its next batch reads none unless contested)."""
        with self._accounts_lock:
            return user_id in self._accounts

    def remember(self, account: CreditAccount) -> None:
        """Start the account's next batch from `account` as stored (e.g. just created: its first batch then
        reads nothing), unless this process holds it already (as saved since, or as read)."""
        with self._accounts_lock:
            if account.user_id not in self._accounts:
                self._remember_locked(account)

    def _remember(self, account: CreditAccount) -> None:
        with self._accounts_lock:
            self._remember_locked(account)

    def _remember_locked(self, account: CreditAccount) -> None:
        self._accounts[account.user_id] = account
        self._accounts.move_to_end(account.user_id)
        while len(self._accounts) > REMEMBERED_ACCOUNTS:
            self._accounts.popitem(last=False)

    def _forget(self, user_id: str) -> None:
        with self._accounts_lock:
            self._accounts.pop(user_id, None)

    def _contest(self, user_id: str) -> None:
        """A rival process writes this account: for CONTESTED_SECONDS its batches start from a fresh read."""
        with self._accounts_lock:
            self.rival_writes_seen += 1
            self._rivals[user_id] = time.monotonic() + CONTESTED_SECONDS
            self._rivals.move_to_end(user_id)
            while len(self._rivals) > REMEMBERED_ACCOUNTS:
                self._rivals.popitem(last=False)

    def _contested(self, user_id: str) -> bool:
        """Whether a rival process wrote this account in the last CONTESTED_SECONDS (an older mark is dropped)."""
        with self._accounts_lock:
            until = self._rivals.get(user_id)
            if until is None or until > time.monotonic():
                return until is not None
            del self._rivals[user_id]
            return False

    def _read(self, user_ids: list[str]) -> dict[str, CreditAccount]:
        """The accounts as stored now: the remembered ones brought forward by the events stored since
        (one read for all; events there mean a rival process wrote them: contested), the others read."""
        accounts: dict[str, CreditAccount] = {}
        held: list[tuple[CreditAccount, int]] = []
        for user_id in user_ids:
            remembered = self._remembered(user_id)
            if remembered is None:
                accounts[user_id] = self._app.get_account(user_id)
            else:
                held.append((remembered, remembered.version))
                accounts[user_id] = remembered
        if held:
            self._app.bring_forward([account for account, _ in held])
            for account, version in held:
                if account.version != version:
                    self._contest(account.user_id)
        return accounts


_IMMUTABLE = (str, int, float, bool, bytes, UUID, datetime, type(None))


def _copy_of(account: CreditAccount) -> CreditAccount:
    """A deep copy of the account (its immutable attributes shared: a tenth of `copy.deepcopy`'s time)."""
    clone = copy.copy(account)
    for name, value in vars(account).items():
        if not isinstance(value, _IMMUTABLE):
            vars(clone)[name] = copy.deepcopy(value)
    return clone


def _stripe_of(user_id: str) -> int:
    return zlib.crc32(user_id.encode()) % STRIPES


def _take(stripe: _Stripe) -> list[_Slot]:
    with stripe.queue_lock:
        slots, stripe.pending = stripe.pending, []
    return slots


def _by_user(slots: list[_Slot]) -> dict[str, list[_Slot]]:
    by_user: dict[str, list[_Slot]] = {}
    for s in slots:
        by_user.setdefault(s.user_id, []).append(s)
    return by_user


def _fail(slots: list[_Slot], error: BaseException) -> None:
    for s in slots:
        if not s.done:
            s.finish(error=error)


def _settle(answered: asyncio.Future[None]) -> None:
    if not answered.done():  # not cancelled (the client went away)
        answered.set_result(None)
