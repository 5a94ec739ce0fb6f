"""Audits by replay: every event in order, checked against the credit and lifecycle invariants."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from itertools import islice
from operator import attrgetter
from typing import Any
from uuid import UUID

from application.audit_chain import ChainReport
from domain.credits import CreditAccount
from domain.tasks import MediaTask

PAGE = 5000


@dataclass(frozen=True)
class Violation:
    code: str
    message: str
    positions: tuple[int, ...] = ()


@dataclass
class AuditReport:
    events: int = 0
    tasks: int = 0
    accounts: int = 0
    violations: list[Violation] = field(default_factory=list)
    pending_refunds: int = 0
    chain: ChainReport | None = None  # None: the chain was not checked
    signatures_checked: bool = False
    invariants_checked: bool = True  # False for a part of the history (the invariants need all of it)

    @property
    def ok(self) -> bool:
        return not self.violations

    def add(self, code: str, message: str, *positions: int) -> None:
        self.violations.append(Violation(code, message, tuple(positions)))

    def summary(self) -> str:
        verdict = "OK" if self.ok else f"{len(self.violations)} violation(s)"
        return (
            f"{verdict}: {self.events} events, {self.tasks} tasks, {self.accounts} accounts"
            + (f", {self.pending_refunds} refund(s) not issued yet" if self.pending_refunds else "")
            + (f"; {self.chain_summary()}" if self.chain is not None else "")
        )

    def chain_summary(self) -> str:
        chain = self.chain
        assert chain is not None
        text = (
            f"sealed to {chain.sealed_to} by {chain.checkpoints} checkpoint(s)"
            + ("" if self.signatures_checked else " (signatures not checked: no key)")
            + (f", {chain.unsealed} event(s) not sealed yet" if chain.unsealed else "")
        )
        if chain.first_tampered is not None:
            text += f"; the history differs from the sealed chain first at position {chain.first_tampered}"
        return text


@dataclass
class _Task:
    user_id: str
    started_at: int
    status: str = "queued"
    terminal_failure: bool = False
    charge_attempt: int = 1
    attempt: int = 0
    progress: int = 0
    cycles: dict[int, str] = field(default_factory=dict)  # charge attempt → "open" | "extracted" | "failed:<pos>"


_task_fields = attrgetter(*(f.name for f in fields(_Task)))
TaskStates = tuple[bytes, list[tuple[Any, ...]], dict[Any, Any]]  # HistoryAuditor.task_states()


class TaskStatesOverlap(Exception):
    """Task states handed to an auditor that had seen the same tasks: the hand-over split the history wrong."""

    def __init__(self, task_ids: list[Any]) -> None:
        super().__init__(f"{len(task_ids)} task(s) handed over were already audited here: {task_ids[:5]}")
        self.task_ids = task_ids


@dataclass
class _Account:
    user_id: str
    balance: int = 0
    charges: dict[tuple[Any, int], tuple[int, int]] = field(
        default_factory=dict
    )  # (task, attempt) → (amount, position)
    refunds: dict[tuple[Any, int], list[int]] = field(default_factory=lambda: defaultdict(list))


class HistoryAuditor:
    """Feed it every event in log order, then `finish()`; `refunds_tracked_to` is the refund issuer's position."""

    def __init__(self, refunds_tracked_to: int | None = None) -> None:
        self.refunds_tracked_to = refunds_tracked_to
        self.report = AuditReport()
        self.tasks: dict[UUID, _Task] = {}
        self.accounts: dict[UUID, _Account] = {}

    def violation(self, code: str, message: str, *positions: int) -> None:
        self.report.add(code, message, *positions)

    def feed(self, position: int, event: Any) -> None:
        self.report.events += 1
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, position, event)

    def unreadable(self, position: int, error: Exception) -> None:
        self.violation("undecodable_event", f"the event at {position} cannot be read: {error}", position)

    def feed_all(
        self,
        events: Iterable[tuple[int, Any]],
        progress: Callable[[int], None] | None = None,
        every: int = 10_000,
        *,
        checks: str = "all",
    ) -> None:
        """`feed` for each (position, event), with the lookups bound once; `progress(position)` now and then.

        `checks="tasks"` / `"accounts"`: only the task events' or the account events' handlers (two
        auditors fed the two halves, `tasks` of one merged into the other before `finish()`, find
        what one auditor fed everything finds: the halves share no state until `finish()`)."""
        handlers, count = _CHECKS[checks], 0
        try:
            for position, event in events:
                count += 1
                handler = handlers.get(type(event))
                if handler is not None:
                    try:
                        handler(self, position, event)
                    except Exception as e:  # noqa: BLE001 - a forged state (a wrong type): name it, go on
                        self.unreadable(position, e)
                if progress is not None and count % every == 0:
                    progress(position)
        finally:
            self.report.events += count

    def task_states(self) -> TaskStates:
        """The task checks' state, for another auditor's `add_task_states` (in another process): the ids'
        16 bytes in one string and each task's fields as a tuple, which pickle without a Python call
        per object (the tasks themselves and their UUIDs would not)."""
        ids: list[bytes] = []
        fields: list[tuple[Any, ...]] = []
        others: dict[Any, _Task] = {}
        names: dict[str, str] = {}
        for task_id, task in self.tasks.items():
            if type(task_id) is not UUID:
                others[task_id] = task
                continue
            ids.append(task_id.bytes)
            state = _task_fields(task)
            fields.append((names.setdefault(state[0], state[0]), *state[1:]))  # each user's id pickled once
        return b"".join(ids), fields, others

    def add_task_states(self, states: TaskStates) -> None:
        """Another auditor's `task_states`, of tasks this one has not seen, merged in the order it had them
        (any id that is not a UUID last). A task both have seen is a fault of the hand-over (the halves are
        disjoint), not of the history: TaskStatesOverlap, never one state silently taking the other's place."""
        ids, fields, others = states
        tasks, task = self.tasks, _Task
        before = len(tasks)
        for start, state in zip(range(0, len(ids), 16), fields, strict=True):
            tasks[UUID(bytes=ids[start : start + 16])] = task(*state)
        tasks.update(others)
        if len(tasks) != before + len(fields) + len(others):  # the ids are compared only when some overlap
            handed = {UUID(bytes=ids[start : start + 16]) for start in range(0, len(ids), 16)} | others.keys()
            raise TaskStatesOverlap([task_id for task_id in islice(tasks, before) if task_id in handed])

    # Tasks ------------------------------------------------------------------------

    def _started(self, pos: int, e: MediaTask.Started) -> None:
        self.tasks[e.originator_id] = _Task(user_id=e.user_id, started_at=pos, cycles={1: "open"})

    def _task(self, pos: int, e: Any) -> _Task | None:
        task = self.tasks.get(e.originator_id)
        if task is None:
            self.violation("event_before_start", f"{type(e).__name__} of task {e.originator_id} without Started", pos)
        elif task.status == "extracted" or (
            task.status == "failed" and task.terminal_failure and not isinstance(e, MediaTask.Retried)
        ):
            self.violation(
                "event_after_terminal", f"{type(e).__name__} after the terminal state of task {e.originator_id}", pos
            )
        return task

    def _downloading(self, pos: int, e: MediaTask.Downloading) -> None:
        if (task := self._task(pos, e)) is not None:
            task.status, task.attempt, task.progress = "downloading", e.attempt, e.progress

    def _processing(self, pos: int, e: MediaTask.Processing) -> None:
        if (task := self._task(pos, e)) is not None:
            if e.attempt == task.attempt and e.progress < task.progress:
                self.violation(
                    "progress_backwards",
                    f"task {e.originator_id} attempt {e.attempt}: progress {task.progress} → {e.progress}",
                    pos,
                )
            task.status, task.progress = "processing", max(task.progress, e.progress)

    def _extracted(self, pos: int, e: MediaTask.Extracted) -> None:
        if (task := self._task(pos, e)) is not None:
            task.status = "extracted"
            task.cycles[task.charge_attempt] = "extracted"

    def _failed(self, pos: int, e: MediaTask.Failed) -> None:
        if (task := self._task(pos, e)) is not None:
            task.status, task.terminal_failure = "failed", e.terminal
            if e.terminal:
                task.cycles[task.charge_attempt] = f"failed:{pos}"

    def _retried(self, pos: int, e: MediaTask.Retried) -> None:
        if (task := self._task(pos, e)) is not None:
            if not (task.status == "failed" and task.terminal_failure):
                self.violation("retry_not_after_failure", f"task {e.originator_id} retried while {task.status}", pos)
            task.status, task.terminal_failure, task.progress = "queued", False, 0
            task.charge_attempt = e.first_attempt
            task.cycles[e.first_attempt] = "open"

    def _task_refunded(self, pos: int, e: MediaTask.Refunded) -> None:
        """The task's half of a refund (the account's Refunded, in the same transaction, is checked below)."""
        task = self.tasks.get(e.originator_id)
        if task is None:
            self.violation("event_before_start", f"Refunded of task {e.originator_id} without Started", pos)
        elif not task.cycles.get(e.first_attempt, "").startswith("failed:"):
            self.violation(
                "refund_of_unfailed_run",
                f"task {e.originator_id} (attempt {e.first_attempt} on) released a charge for a run that did not fail",
                pos,
            )

    # Accounts ---------------------------------------------------------------------

    def _opened(self, pos: int, e: CreditAccount.Opened) -> None:
        self.accounts[e.originator_id] = _Account(user_id=e.user_id)

    def _account(self, pos: int, e: Any) -> _Account | None:
        account = self.accounts.get(e.originator_id)
        if account is None:
            self.violation("event_before_open", f"{type(e).__name__} of account {e.originator_id} without Opened", pos)
        return account

    def _granted(self, pos: int, e: CreditAccount.Granted) -> None:
        if (account := self._account(pos, e)) is not None:
            account.balance += e.amount

    def _charged(self, pos: int, e: CreditAccount.Charged) -> None:
        if (account := self._account(pos, e)) is None:
            return
        key = (e.task_id, e.attempt)
        if key in account.charges:
            self.violation(
                "double_charge",
                f"{account.user_id} charged twice for task {e.task_id} attempt {e.attempt}",
                account.charges[key][1],
                pos,
            )
        account.charges[key] = (e.amount, pos)
        account.balance -= e.amount
        if account.balance < 0:
            self.violation("negative_balance", f"{account.user_id}'s balance went to {account.balance}", pos)

    def _refunded(self, pos: int, e: CreditAccount.Refunded) -> None:
        if (account := self._account(pos, e)) is None:
            return
        key = (e.task_id, e.attempt)
        if key not in account.charges:
            self.violation(
                "refund_without_charge",
                f"{account.user_id} refunded for task {e.task_id} attempt {e.attempt}, which was never charged",
                pos,
            )
        account.refunds[key].append(pos)
        account.balance += e.amount

    # Conclusions ------------------------------------------------------------------

    def finish(self) -> AuditReport:
        self.report.tasks, self.report.accounts = len(self.tasks), len(self.accounts)
        by_user = {a.user_id: a for a in self.accounts.values()}
        for task_id, task in self.tasks.items():
            account = by_user.get(task.user_id)
            for first_attempt, outcome in task.cycles.items():
                key = (task_id, first_attempt)
                charged = account is not None and key in account.charges
                refunds = account.refunds.get(key, []) if account is not None else []
                if not charged:
                    self.violation(
                        "unpaid_task", f"task {task_id} (attempt {first_attempt} on) was never charged", task.started_at
                    )
                if outcome == "extracted" and refunds:
                    self.violation("refund_of_extracted", f"task {task_id} was extracted and refunded", *refunds)
                if outcome.startswith("failed:"):
                    failed_at = int(outcome.split(":")[1])
                    if not refunds:
                        if self.refunds_tracked_to is not None and self.refunds_tracked_to < failed_at:
                            self.report.pending_refunds += 1
                        else:
                            self.violation("missing_refund", f"task {task_id} failed but was not refunded", failed_at)
                if len(refunds) > 1:
                    self.violation(
                        "double_refund",
                        f"task {task_id} attempt {first_attempt} refunded {len(refunds)} times",
                        *refunds,
                    )
        for account in self.accounts.values():
            for (task_id, _), (_, pos) in account.charges.items():
                if task_id not in self.tasks:
                    self.violation(
                        "charge_without_task",
                        f"{account.user_id} charged for task {task_id}, which does not exist",
                        pos,
                    )
                elif self.tasks[task_id].user_id != account.user_id:
                    self.violation(
                        "charge_for_other_user", f"{account.user_id} charged for another user's task {task_id}", pos
                    )
        return self.report


_TASK_HANDLERS: dict[type, Callable[[HistoryAuditor, int, Any], None]] = {
    MediaTask.Started: HistoryAuditor._started,
    MediaTask.Downloading: HistoryAuditor._downloading,
    MediaTask.Processing: HistoryAuditor._processing,
    MediaTask.Extracted: HistoryAuditor._extracted,
    MediaTask.Failed: HistoryAuditor._failed,
    MediaTask.Retried: HistoryAuditor._retried,
    MediaTask.Refunded: HistoryAuditor._task_refunded,
}
_ACCOUNT_HANDLERS: dict[type, Callable[[HistoryAuditor, int, Any], None]] = {
    CreditAccount.Opened: HistoryAuditor._opened,
    CreditAccount.Granted: HistoryAuditor._granted,
    CreditAccount.Charged: HistoryAuditor._charged,
    CreditAccount.Refunded: HistoryAuditor._refunded,
}
_HANDLERS = {**_TASK_HANDLERS, **_ACCOUNT_HANDLERS}
_CHECKS = {"all": _HANDLERS, "tasks": _TASK_HANDLERS, "accounts": _ACCOUNT_HANDLERS}
ACCOUNT_EVENTS = tuple(_ACCOUNT_HANDLERS)  # the account events (the task events' handlers never see them)


def replay(app: Any, *, after: int = 0, stop: int | None = None, page: int = PAGE) -> Iterator[tuple[int, Any]]:
    """Every event of the application after a position, in log order, read in pages from the recorder."""
    start = after
    while True:
        notifications = app.recorder.select_notifications(start=start, limit=page, stop=stop, inclusive_of_start=False)
        for notification in notifications:
            yield notification.id, app.mapper.to_domain_event(notification)
        if len(notifications) < page:
            return
        start = notifications[-1].id
