"""TaskViews in memory: for audits (a fresh rebuild to compare with) and fast tests."""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, replace
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import Tracking
from eventsourcing.popo import POPOTrackingRecorder

from domain.credits import CreditAccount
from projections.task_views import (
    OPEN_STATUSES,
    AccountView,
    LedgerEntry,
    TaskPage,
    TaskUpdate,
    TaskView,
    TaskViews,
)


def encode_cursor(created_at: datetime, task_id: UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(task_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, UUID]:
    """Raises ValueError for a cursor this service did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, task_id = json.loads(raw)
        return datetime.fromisoformat(created_at), UUID(task_id)
    except Exception as e:
        raise ValueError("invalid cursor") from e


class MemoryTaskViews(TaskViews, POPOTrackingRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.tasks: dict[UUID, TaskView] = {}
        self.updates: dict[UUID, list[TaskUpdate]] = {}
        self.accounts: dict[UUID, AccountView] = {}
        self.entries: list[LedgerEntry] = []

    def _tracked(self, tracking: Tracking) -> None:
        self._assert_tracking_uniqueness(tracking)
        self._insert_tracking(tracking)

    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        with self._database_lock:
            self._tracked(tracking)
            self.tasks[task.task_id] = task
            self.updates[task.task_id] = [_update_of(task, task.created_at)]

    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        with self._database_lock:
            self._tracked(tracking)
            task = self.tasks.get(task_id)
            if task is None:
                return
            task = replace(task, **changes, updated_at=at, position=tracking.notification_id)
            self.tasks[task_id] = task
            self.updates[task_id].append(_update_of(task, at))

    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        with self._database_lock:
            self._tracked(tracking)
            self.accounts[account_id] = AccountView(account_id, user_id, 0, at, tracking.notification_id)

    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        with self._database_lock:
            self._tracked(tracking)
            account = self.accounts[entry.account_id]
            balance = account.balance + entry.amount
            self.accounts[entry.account_id] = replace(
                account, balance=balance, updated_at=entry.at, position=tracking.notification_id
            )
            self.entries.append(replace(entry, balance=balance))
            if entry.kind == "refund" and entry.task_id in self.tasks:
                task = self.tasks[entry.task_id]
                self.tasks[entry.task_id] = replace(task, refunded_credits=task.refunded_credits + entry.amount)

    def track_only(self, tracking: Tracking) -> None:
        with self._database_lock:
            self._tracked(tracking)

    def get_task(self, task_id: UUID) -> TaskView | None:
        with self._database_lock:
            return self.tasks.get(task_id)

    def list_tasks(
        self, user_id: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> TaskPage:
        with self._database_lock:
            rows = [t for t in self.tasks.values() if t.user_id == user_id and (status is None or t.status == status)]
        rows.sort(key=lambda t: (t.created_at, str(t.task_id)), reverse=True)
        if cursor:
            created_at, task_id = decode_cursor(cursor)
            rows = [t for t in rows if (t.created_at, str(t.task_id)) < (created_at, str(task_id))]
        page = rows[:limit]
        more = len(rows) > limit
        return TaskPage(page, encode_cursor(page[-1].created_at, page[-1].task_id) if more and page else None)

    def task_updates(self, task_id: UUID, after: int = 0) -> list[TaskUpdate]:
        with self._database_lock:
            return [u for u in self.updates.get(task_id, []) if u.position > after]

    def get_account(self, user_id: str) -> AccountView | None:
        with self._database_lock:
            return self.accounts.get(CreditAccount.id_for(user_id))

    def ledger(self, user_id: str, *, limit: int = 50, before: int | None = None) -> list[LedgerEntry]:
        account_id = CreditAccount.id_for(user_id)
        with self._database_lock:
            rows = [e for e in self.entries if e.account_id == account_id and (before is None or e.position < before)]
        return sorted(rows, key=lambda e: e.position, reverse=True)[:limit]

    def task_at_position(self, task_id: UUID, application_name: str) -> tuple[int | None, TaskView | None]:
        with self._database_lock:  # re-entrant: one hold, one snapshot
            return self.max_tracking_id(application_name), self.get_task(task_id)

    def account_at_position(
        self, user_id: str, application_name: str, *, limit: int = 50, before: int | None = None
    ) -> tuple[int | None, AccountView | None, list[LedgerEntry]]:
        with self._database_lock:
            position, account = self.max_tracking_id(application_name), self.get_account(user_id)
            return position, account, self.ledger(user_id, limit=limit, before=before)

    def stale_tasks(
        self, updated_before: datetime, limit: int = 100, statuses: tuple[str, ...] = OPEN_STATUSES
    ) -> list[TaskView]:
        with self._database_lock:
            rows = [t for t in self.tasks.values() if t.status in statuses and t.updated_at < updated_before]
        return sorted(rows, key=lambda t: t.updated_at)[:limit]

    def snapshot(self) -> dict[str, Any]:
        with self._database_lock:
            return {
                "tasks": sorted((plain_row(asdict(t)) for t in self.tasks.values()), key=lambda r: r["task_id"]),
                "accounts": sorted(
                    (plain_row(asdict(a)) for a in self.accounts.values()), key=lambda r: r["account_id"]
                ),
                "ledger": [plain_row(asdict(e)) for e in sorted(self.entries, key=lambda e: e.position)],
            }


def _update_of(task: TaskView, at: datetime) -> TaskUpdate:
    return TaskUpdate(task.position, task.task_id, task.status, task.progress, task.attempt, task.stage, task.error, at)


def plain_row(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON-comparable form of a row (UUIDs as strings, datetimes as UTC ISO strings)."""

    try:
        return orjson.loads(orjson.dumps(row, default=_plain, option=_PLAIN_OPTIONS))
    except TypeError:  # what orjson does not take (ints past 64 bits): the json module's way
        return json.loads(json.dumps(row, default=_plain, sort_keys=True))


_PLAIN_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS
_NATIVE_DATETIME_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def plain_json(value: Any, *, native_datetimes: bool = False) -> bytes | None:
    """orjson's bytes (sorted keys) of `value` with each row as `plain_row` gives it, in one call; None where
    orjson refuses a value. Equal bytes mean equal plain rows (a fast path for comparing snapshots).

    `native_datetimes`: orjson writes datetimes itself (RFC 3339, no call per value), which is
    `plain_row`'s form for a UTC datetime only: the bytes may then differ where the plain rows are equal."""
    try:
        options = _NATIVE_DATETIME_OPTIONS if native_datetimes else _PLAIN_OPTIONS
        return orjson.dumps(value, default=_plain, option=options)
    except TypeError:
        return None


def _plain(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).isoformat()
    return str(value)
