"""The read model: tasks, their progress updates, account balances and ledgers.

`TaskViews` is the port (a tracking recorder with query methods); `TaskViewsProjection`
turns events into view updates, each written with its tracking position in one transaction
(the PostgreSQL view writes a page of events in one: infrastructure/projection_followers.py).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from functools import singledispatchmethod
from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking, TrackingRecorder
from eventsourcing.projection import Projection

from domain.credits import CreditAccount
from domain.tasks import MediaTask
from domain.text import clean_json, clean_text
from domain.vocabulary import OPEN_STATUSES, TaskStatus

TERMINAL_STATUSES = (TaskStatus.EXTRACTED, TaskStatus.FAILED)


@dataclass(frozen=True)
class TaskView:
    task_id: UUID
    user_id: str
    url: str
    platform: str
    output_type: str
    languages: list[str]
    status: str
    progress: int
    attempt: int
    credits_charged: int
    created_at: datetime
    updated_at: datetime
    position: int
    stage: str = ""
    title: str = ""
    error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    timings: dict[str, Any] = field(default_factory=dict)
    refunded_credits: int = 0


@dataclass(frozen=True)
class TaskUpdate:
    """One status/progress change of a task, as a live stream shows it."""

    position: int
    task_id: UUID
    status: str
    progress: int
    attempt: int
    stage: str
    error: dict[str, Any] | None
    at: datetime


@dataclass(frozen=True)
class LedgerEntry:
    position: int
    account_id: UUID
    kind: str
    amount: int
    balance: int
    task_id: UUID | None
    attempt: int | None
    reason: str
    at: datetime


@dataclass(frozen=True)
class AccountView:
    account_id: UUID
    user_id: str
    balance: int
    updated_at: datetime
    position: int


@dataclass(frozen=True)
class TaskPage:
    tasks: list[TaskView]
    next_cursor: str | None


class TaskViews(TrackingRecorder):
    """Materialised view of the MediaTasks application (port; memory and PostgreSQL implement it)."""

    # Writes: each records the view change and the tracking position atomically.

    @abstractmethod
    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        """Insert a new task row (and its first update)."""

    @abstractmethod
    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        """Apply changes to a task row and append the resulting status/progress update."""

    @abstractmethod
    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        """Insert a new account row with a zero balance."""

    @abstractmethod
    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        """Apply a ledger entry to the account's balance and record it (a refund also marks its task)."""

    @abstractmethod
    def track_only(self, tracking: Tracking) -> None:
        """Record the position of an event that changes nothing in the view."""

    # Queries.

    @abstractmethod
    def get_task(self, task_id: UUID) -> TaskView | None:
        """One task's row."""

    @abstractmethod
    def list_tasks(
        self, user_id: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> TaskPage:
        """The user's tasks, newest first; the cursor is opaque."""

    @abstractmethod
    def task_updates(self, task_id: UUID, after: int = 0) -> list[TaskUpdate]:
        """The task's status/progress updates after a position, in order."""

    @abstractmethod
    def get_account(self, user_id: str) -> AccountView | None:
        """The account's balance."""

    @abstractmethod
    def ledger(self, user_id: str, *, limit: int = 50, before: int | None = None) -> list[LedgerEntry]:
        """The account's entries, newest first, before a position."""

    @abstractmethod
    def task_at_position(self, task_id: UUID, application_name: str) -> tuple[int | None, TaskView | None]:
        """The view's position for the application and one task's row, both from one snapshot (one read:
        read-your-writes polls it)."""

    @abstractmethod
    def account_at_position(
        self, user_id: str, application_name: str, *, limit: int = 50, before: int | None = None
    ) -> tuple[int | None, AccountView | None, list[LedgerEntry]]:
        """The view's position for the application, the account and its entries (as `ledger`), all from one
        snapshot (one read: read-your-writes polls it)."""

    @abstractmethod
    def stale_tasks(
        self, updated_before: datetime, limit: int = 100, statuses: tuple[str, ...] = OPEN_STATUSES
    ) -> list[TaskView]:
        """Tasks in these statuses not updated since a moment, oldest first (for the sweeper)."""

    @abstractmethod
    def snapshot(self) -> dict[str, Any]:
        """Every row, in a comparable form (for audits)."""


class TaskViewsProjection(Projection[TaskViews]):
    """Follows MediaTasks and keeps TaskViews up to date.

    Text from events reaches the view cleaned (domain/text.py): an event is immutable, so one holding
    a NUL or a lone surrogate must not stop the projection at every replay.
    """

    name = "TaskViews"
    topics = ()

    @singledispatchmethod
    def process_event(self, domain_event: Any, tracking: Tracking) -> None:
        self.view.track_only(tracking)

    @process_event.register
    def _(self, domain_event: MediaTask.Started, tracking: Tracking) -> None:
        e = domain_event
        self.view.task_started(
            TaskView(
                task_id=e.originator_id,
                user_id=clean_text(e.user_id),
                url=clean_text(e.url),
                platform=clean_text(e.platform),
                output_type=clean_text(e.output_type),
                languages=clean_json(list(e.languages)),
                status=TaskStatus.QUEUED,
                progress=0,
                attempt=0,
                credits_charged=e.credits,
                created_at=e.timestamp,
                updated_at=e.timestamp,
                position=tracking.notification_id,
            ),
            tracking,
        )

    @process_event.register
    def _(self, domain_event: MediaTask.Downloading, tracking: Tracking) -> None:
        e = domain_event
        changes = {
            "status": TaskStatus.DOWNLOADING,
            "progress": e.progress,
            "attempt": e.attempt,
            "stage": "download",
            "error": None,
        }
        self._task_changed(e, changes, tracking)

    @process_event.register
    def _(self, domain_event: MediaTask.Processing, tracking: Tracking) -> None:
        e = domain_event
        changes: dict[str, Any] = {"status": TaskStatus.PROCESSING, "progress": e.progress, "stage": e.stage}
        timings = e.details.get("timings")
        if timings:
            changes["timings"] = timings
        title = e.details.get("title")
        if title:
            changes["title"] = str(title)
        self._task_changed(e, changes, tracking)

    @process_event.register
    def _(self, domain_event: MediaTask.Extracted, tracking: Tracking) -> None:
        e = domain_event
        changes = {
            "status": TaskStatus.EXTRACTED,
            "progress": 100,
            "stage": "done",
            "result": e.result,
            "timings": e.result.get("timings", {}),
        }
        self._task_changed(e, changes, tracking)

    @process_event.register
    def _(self, domain_event: MediaTask.Failed, tracking: Tracking) -> None:
        e = domain_event
        error = {
            "code": e.code,
            "message": e.message,
            "retryable": e.retryable,
            "terminal": e.terminal,
            "attempt": e.attempt,
        }
        status = TaskStatus.FAILED if e.terminal else TaskStatus.RETRYING
        self._task_changed(e, {"status": status, "error": error}, tracking)

    @process_event.register
    def _(self, domain_event: MediaTask.Retried, tracking: Tracking) -> None:
        e = domain_event
        changes = {
            "status": TaskStatus.QUEUED,
            "progress": 0,
            "error": None,
            "result": None,
            "credits_charged": e.credits,
            "stage": "",
        }
        self._task_changed(e, changes, tracking)

    @process_event.register
    def _(self, domain_event: CreditAccount.Opened, tracking: Tracking) -> None:
        e = domain_event
        self.view.account_opened(e.originator_id, clean_text(e.user_id), e.timestamp, tracking)

    @process_event.register
    def _(self, domain_event: CreditAccount.Granted, tracking: Tracking) -> None:
        self._ledger(domain_event, tracking, "grant", domain_event.amount, None, None, domain_event.reason)

    @process_event.register
    def _(self, domain_event: CreditAccount.Charged, tracking: Tracking) -> None:
        e = domain_event
        self._ledger(e, tracking, "charge", -e.amount, e.task_id, e.attempt, "")

    @process_event.register
    def _(self, domain_event: CreditAccount.Refunded, tracking: Tracking) -> None:
        e = domain_event
        self._ledger(e, tracking, "refund", e.amount, e.task_id, e.attempt, "")

    def dispatcher(self) -> Any:
        """`process_event` without singledispatchmethod's per-call wrapper (for replays of millions of events)."""
        dispatch = TaskViewsProjection.__dict__["process_event"].dispatcher.dispatch
        handlers: dict[type, Any] = {}

        def process(event: Any, tracking: Tracking) -> None:
            handler = handlers.get(type(event))
            if handler is None:
                handler = handlers[type(event)] = dispatch(type(event))
            handler(self, event, tracking)

        return process

    def _ledger(
        self, e: Any, tracking: Tracking, kind: str, amount: int, task_id: UUID | None, attempt: int | None, reason: str
    ) -> None:
        entry = LedgerEntry(
            tracking.notification_id,
            e.originator_id,
            kind,
            amount,
            0,
            task_id,
            attempt,
            clean_text(reason),
            e.timestamp,
        )
        self.view.account_changed(entry, tracking)

    def _task_changed(self, e: Any, changes: dict[str, Any], tracking: Tracking) -> None:
        self.view.task_changed(e.originator_id, clean_json(changes), e.timestamp, tracking)
