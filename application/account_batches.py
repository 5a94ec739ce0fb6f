"""Commands on one account decided together: one read of the account, one transaction, one answer each.

Concurrent callers on the same account (submissions, retries, grants) in one process queue their
command; whoever takes the account's lock first drains the queue and decides every waiting command
in order against one read of the account, then saves the account with every task those commands
made or changed in one `save` (one transaction). Each caller gets its own answer: its result, or the
domain error its command raised (an error writes nothing: a command checks before it records, and
the tasks of a refused command are not saved). Across processes optimistic concurrency stays the
arbiter: a conflicting save decides the whole batch again on fresh reads.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast
from uuid import UUID

from eventsourcing.persistence import IntegrityError, InterfaceError, OperationalError

from domain.credits import CreditAccount
from domain.errors import ConcurrentUpdates, DomainError
from domain.tasks import MediaTask

if TYPE_CHECKING:
    from application.mediatasks import MediaTasks

STRIPES = 256


class Batch:
    """What the commands of one batch share: the tasks they made or changed, and whether this is a re-run."""

    def __init__(self, app: MediaTasks, rerun: bool) -> None:
        self._app = app
        self.rerun = rerun  # after a lost race: a task may exist that the first run did not see
        self.tasks: dict[UUID, MediaTask] = {}

    def find_task(self, task_id: UUID) -> MediaTask | None:
        """The task as this batch left it, else as stored (changes to the latter are kept only by `add`)."""
        return self.tasks.get(task_id) or self._app._find_task(task_id)

    def add(self, task: MediaTask) -> None:
        self.tasks[task.id] = task


R = TypeVar("R")
Answer = Callable[[int | None], R]  # given the batch's last notification id, the caller's result
Decide = Callable[[CreditAccount, Batch], Answer[R]]


class _Slot:
    __slots__ = ("decide", "done", "error", "result", "user_id")

    def __init__(self, user_id: str, decide: Decide[Any]) -> None:
        self.user_id = user_id
        self.decide = decide
        self.done = False
        self.result: Any = None
        self.error: BaseException | None = None


class _Stripe:
    __slots__ = ("lock", "pending", "queue_lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()  # held by the caller deciding a batch
        self.queue_lock = threading.Lock()
        self.pending: list[_Slot] = []


class AccountBatches:
    def __init__(self, app: MediaTasks, retries: Callable[[], Iterator[int]]) -> None:
        self._app = app
        self._retries = retries
        self._stripes = [_Stripe() for _ in range(STRIPES)]

    def run(self, user_id: str, decide: Decide[R]) -> R:
        """Decide `decide` with every command waiting on this account; its answer, or its error raised."""
        stripe = self._stripes[zlib.crc32(user_id.encode()) % STRIPES]
        slot = _Slot(user_id, decide)
        with stripe.queue_lock:
            stripe.pending.append(slot)
        with stripe.lock:
            if not slot.done:
                with stripe.queue_lock:
                    slots, stripe.pending = stripe.pending, []
                by_user: dict[str, list[_Slot]] = {}
                for s in slots:
                    by_user.setdefault(s.user_id, []).append(s)
                for user_slots in by_user.values():
                    self._decide_and_save(user_slots)
        if slot.error is not None:
            raise slot.error
        return cast(R, slot.result)  # the result of this slot's own `decide`

    def _decide_and_save(self, slots: list[_Slot]) -> None:
        try:
            for n in self._retries():
                if self._try(slots, rerun=n > 0):
                    return
            raise ConcurrentUpdates("Too many concurrent updates; try again.")
        except BaseException as e:  # noqa: BLE001 - every caller of the batch gets it
            for s in slots:
                if not s.done:
                    s.error, s.done = e, True

    def _try(self, slots: list[_Slot], rerun: bool) -> bool:
        """One decision of the batch and its save; False when a rival's save won (decide again)."""
        account = self._app.get_account(slots[0].user_id)
        batch = Batch(self._app, rerun)
        answers: list[tuple[_Slot, Answer[Any] | None, DomainError | None]] = []
        for s in slots:
            try:
                answers.append((s, s.decide(account, batch), None))
            except DomainError as e:
                answers.append((s, None, e))
        last_id: int | None = None
        if account.pending_events:
            try:
                # The account last: its last event's position is the transaction's (read-your-writes waits on it).
                recordings = self._app.save(*batch.tasks.values(), account)
            except IntegrityError:
                return False
            except (OperationalError, InterfaceError):
                # The connection may have been lost during COMMIT: the save may have happened. Re-read.
                first = next(iter(batch.tasks.values()), None)
                if first is None or self._app._task_version(first.id) != first.version:
                    raise
            else:
                ids = [r.notification.id for r in recordings if r.notification.id is not None]
                last_id = max(ids) if ids else None
        for s, answer, error in answers:
            if error is not None:
                s.error = error
            else:
                assert answer is not None
                s.result = answer(last_id)
            s.done = True
        return True
