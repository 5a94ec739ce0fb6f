"""TaskViews in PostgreSQL: tables named after the projection, written with their tracking row."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg.types.json import Jsonb, set_json_dumps

from domain.credits import CreditAccount
from domain.text import clean_json, clean_text
from infrastructure.postgres.store_connections import read_retried
from projections.memory_views import decode_cursor, encode_cursor, plain_json, plain_row
from projections.task_views import (
    OPEN_STATUSES,
    AccountView,
    LedgerEntry,
    TaskPage,
    TaskUpdate,
    TaskView,
    TaskViews,
)

TASK_COLUMNS = (
    "task_id",
    "user_id",
    "url",
    "platform",
    "output_type",
    "languages",
    "status",
    "progress",
    "attempt",
    "credits_charged",
    "created_at",
    "updated_at",
    "position",
    "stage",
    "title",
    "error",
    "result",
    "timings",
    "refunded_credits",
)
JSON_COLUMNS = {"languages", "error", "result", "timings"}
UPDATE_COLUMNS = ("position", "task_id", "status", "progress", "attempt", "stage", "error", "at")
ACCOUNT_COLUMNS = ("account_id", "user_id", "balance", "updated_at", "position")
LEDGER_COLUMNS = ("position", "account_id", "kind", "amount", "balance", "task_id", "attempt", "reason", "at")
# The read model is derived from the events: its commits need not wait for the disk (see _write_tracked).
ASYNCHRONOUS_COMMIT = SQL("SET LOCAL synchronous_commit = off")


class PostgresTaskViews(TaskViews, PostgresTrackingRecorder):
    def __init__(self, datastore: PostgresDatastore, *, tracking_table_name: str, **kwargs: Any) -> None:
        super().__init__(datastore, tracking_table_name=tracking_table_name, **kwargs)
        self._batch = threading.local()
        prefix = tracking_table_name.removesuffix("_tracking")
        self.prefix = prefix
        self.tables = view_tables(datastore.schema, prefix)
        for name in self.tables:
            self.check_identifier_length(f"{prefix}_{name}")
        t = self.tables
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    "task_id uuid PRIMARY KEY, user_id text NOT NULL, url text NOT NULL, platform text NOT NULL, "
                    "output_type text NOT NULL, languages jsonb NOT NULL, status text NOT NULL, "
                    "progress int NOT NULL, attempt int NOT NULL, credits_charged int NOT NULL, "
                    "created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL, position bigint NOT NULL, "
                    "stage text NOT NULL DEFAULT '', title text NOT NULL DEFAULT '', error jsonb, result jsonb, "
                    "timings jsonb NOT NULL DEFAULT '{{}}', refunded_credits int NOT NULL DEFAULT 0)"
                ).format(t["tasks"]),
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id, created_at DESC, task_id DESC)").format(
                    Identifier(f"{prefix}_tasks_by_user"), t["tasks"]
                ),
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (updated_at) WHERE status IN ({})").format(
                    Identifier(f"{prefix}_tasks_open"), t["tasks"], SQL(", ").join(map(Literal, OPEN_STATUSES))
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, task_id uuid NOT NULL, "
                    "status text NOT NULL, progress int NOT NULL, attempt int NOT NULL, stage text NOT NULL, "
                    "error jsonb, at timestamptz NOT NULL)"
                ).format(t["updates"]),
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (task_id, position)").format(
                    Identifier(f"{prefix}_updates_by_task"), t["updates"]
                ),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (account_id uuid PRIMARY KEY, user_id text NOT NULL UNIQUE, "
                    "balance bigint NOT NULL, updated_at timestamptz NOT NULL, position bigint NOT NULL)"
                ).format(t["accounts"]),
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (position bigint PRIMARY KEY, account_id uuid NOT NULL, "
                    "kind text NOT NULL, amount bigint NOT NULL, balance bigint NOT NULL, task_id uuid, attempt int, "
                    "reason text NOT NULL, at timestamptz NOT NULL)"
                ).format(t["ledger"]),
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (account_id, position DESC)").format(
                    Identifier(f"{prefix}_ledger_by_account"), t["ledger"]
                ),
            ]
        )

    # Writes ---------------------------------------------------------------------

    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        row = _task_params(task)

        def write(curs: Any) -> None:
            curs.execute(
                SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (task_id) DO NOTHING").format(
                    self.tables["tasks"],
                    SQL(", ").join(map(Identifier, TASK_COLUMNS)),
                    SQL(", ").join(SQL("%({})s").format(SQL(c)) for c in TASK_COLUMNS),
                ),
                row,
            )
            self._append_update(curs, task.task_id, tracking.notification_id)

        self._write_tracked(tracking, write)

    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        params = {k: _storable(k, v) for k, v in changes.items()}
        params.update(_task_id=task_id, updated_at=at, position=tracking.notification_id)
        assignments = SQL(", ").join(
            SQL("{} = %({})s").format(Identifier(k), SQL(k)) for k in [*changes, "updated_at", "position"]
        )

        def write(curs: Any) -> None:
            curs.execute(
                SQL("UPDATE {} SET {} WHERE task_id = %(_task_id)s").format(self.tables["tasks"], assignments),
                params,
            )
            if curs.rowcount:
                self._append_update(curs, task_id, tracking.notification_id)

        self._write_tracked(tracking, write)

    def _append_update(self, curs: Any, task_id: UUID, position: int) -> None:
        curs.execute(
            SQL(
                "INSERT INTO {} (position, task_id, status, progress, attempt, stage, error, at) "
                "SELECT %s, task_id, status, progress, attempt, stage, error, updated_at FROM {} "
                "WHERE task_id = %s ON CONFLICT DO NOTHING"
            ).format(self.tables["updates"], self.tables["tasks"]),
            (position, task_id),
        )

    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        def write(curs: Any) -> None:
            curs.execute(
                SQL(
                    "INSERT INTO {} (account_id, user_id, balance, updated_at, position) "
                    "VALUES (%s, %s, 0, %s, %s) ON CONFLICT DO NOTHING"
                ).format(self.tables["accounts"]),
                (account_id, clean_text(user_id), at, tracking.notification_id),
            )

        self._write_tracked(tracking, write)

    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        def write(curs: Any) -> None:
            curs.execute(
                SQL(
                    "UPDATE {} SET balance = balance + %s, updated_at = %s, position = %s "
                    "WHERE account_id = %s RETURNING balance"
                ).format(self.tables["accounts"]),
                (entry.amount, entry.at, tracking.notification_id, entry.account_id),
            )
            row = curs.fetchone()
            balance = row["balance"] if row else entry.amount
            curs.execute(
                SQL(
                    "INSERT INTO {} (position, account_id, kind, amount, balance, task_id, attempt, reason, at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ).format(self.tables["ledger"]),
                (
                    entry.position,
                    entry.account_id,
                    clean_text(entry.kind),
                    entry.amount,
                    balance,
                    entry.task_id,
                    entry.attempt,
                    clean_text(entry.reason),
                    entry.at,
                ),
            )
            if entry.kind == "refund" and entry.task_id is not None:
                curs.execute(
                    SQL("UPDATE {} SET refunded_credits = refunded_credits + %s WHERE task_id = %s").format(
                        self.tables["tasks"]
                    ),
                    (entry.amount, entry.task_id),
                )

        self._write_tracked(tracking, write)

    def track_only(self, tracking: Tracking) -> None:
        self._write_tracked(tracking, lambda curs: None)

    def _write_tracked(self, tracking: Tracking, write: Callable[[Any], None]) -> None:
        """Record the tracking position and the change in one transaction.

        If a rival runner (a standby taking over) recorded this position already, the
        change is dropped: the view has it. The commit does not wait for the WAL flush
        (synchronous_commit off): a crash can lose the last few view changes, but always
        with their tracking positions, so the projection redoes them from the events.
        """
        batch = getattr(self._batch, "curs", None)
        if batch is not None:  # inside batch(): one transaction for many events
            self._insert_tracking(batch, tracking)
            write(batch)
            return
        try:
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(ASYNCHRONOUS_COMMIT)
                self._insert_tracking(curs, tracking)
                write(curs)
        except IntegrityError:
            if not self.has_tracking_id(tracking.application_name, tracking.notification_id):
                raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply many events in one transaction (for rebuilds): all of them, with their tracking, or none."""
        with self.datastore.transaction(commit=True) as curs:
            self._batch.curs = curs
            try:
                yield
            finally:
                self._batch.curs = None

    # Queries --------------------------------------------------------------------

    def _select(self, query: SQL | Any, params: Any = ()) -> list[DictRow]:
        """One read, retried once on a fresh connection if it met a broken one (after a database restart)."""

        def read() -> list[DictRow]:
            with self.datastore.get_connection() as conn, conn.cursor() as curs:
                curs.execute(query, params)
                return curs.fetchall()

        return read_retried(self.datastore, read)

    def get_task(self, task_id: UUID) -> TaskView | None:
        rows = self._select(SQL("SELECT * FROM {} WHERE task_id = %s").format(self.tables["tasks"]), (task_id,))
        return _task_view(rows[0]) if rows else None

    def list_tasks(
        self, user_id: str, *, status: str | None = None, limit: int = 20, cursor: str | None = None
    ) -> TaskPage:
        conditions = [SQL("user_id = %(user_id)s")]
        params: dict[str, Any] = {"user_id": user_id, "limit": limit + 1}
        if status:
            conditions.append(SQL("status = %(status)s"))
            params["status"] = status
        if cursor:
            params["c_at"], params["c_id"] = decode_cursor(cursor)
            conditions.append(SQL("(created_at, task_id) < (%(c_at)s, %(c_id)s)"))
        rows = self._select(
            SQL("SELECT * FROM {} WHERE {} ORDER BY created_at DESC, task_id DESC LIMIT %(limit)s").format(
                self.tables["tasks"], SQL(" AND ").join(conditions)
            ),
            params,
        )
        tasks = [_task_view(r) for r in rows[:limit]]
        more = len(rows) > limit
        return TaskPage(tasks, encode_cursor(tasks[-1].created_at, tasks[-1].task_id) if more and tasks else None)

    def task_updates(self, task_id: UUID, after: int = 0) -> list[TaskUpdate]:
        rows = self._select(
            SQL("SELECT * FROM {} WHERE task_id = %s AND position > %s ORDER BY position").format(
                self.tables["updates"]
            ),
            (task_id, after),
        )
        return [TaskUpdate(**r) for r in rows]

    def get_account(self, user_id: str) -> AccountView | None:
        rows = self._select(
            SQL("SELECT * FROM {} WHERE account_id = %s").format(self.tables["accounts"]),
            (CreditAccount.id_for(user_id),),
        )
        return AccountView(**rows[0]) if rows else None

    def ledger(self, user_id: str, *, limit: int = 50, before: int | None = None) -> list[LedgerEntry]:
        rows = self._select(
            SQL("SELECT * FROM {} WHERE account_id = %s AND position < %s ORDER BY position DESC LIMIT %s").format(
                self.tables["ledger"]
            ),
            (CreditAccount.id_for(user_id), before if before is not None else 2**62, limit),
        )
        return [LedgerEntry(**r) for r in rows]

    def stale_tasks(
        self, updated_before: datetime, limit: int = 100, statuses: tuple[str, ...] = OPEN_STATUSES
    ) -> list[TaskView]:
        rows = self._select(
            SQL("SELECT * FROM {} WHERE status = ANY(%s) AND updated_at < %s ORDER BY updated_at LIMIT %s").format(
                self.tables["tasks"]
            ),
            (list(statuses), updated_before, limit),
        )
        return [_task_view(r) for r in rows]

    def snapshot(self) -> dict[str, Any]:
        return read_snapshot(self._select, self.tables)

    def drop_tables(self) -> None:
        """Remove this view's tables (after a rebuild under another name replaced it)."""
        with self.datastore.transaction(commit=True) as curs:
            for table in self.tables.values():
                curs.execute(SQL("DROP TABLE IF EXISTS {}").format(table))
            curs.execute(
                SQL("DROP TABLE IF EXISTS {}.{}").format(
                    Identifier(self.datastore.schema), Identifier(self.tracking_table_name)
                )
            )


def view_tables(schema: str, prefix: str) -> dict[str, Composed]:
    """The read model's tables, schema-qualified."""
    return {
        name: SQL("{}.{}").format(Identifier(schema), Identifier(f"{prefix}_{name}"))
        for name in ("tasks", "updates", "accounts", "ledger")
    }


def read_snapshot(select: Callable[[Any], list[Any]], tables: dict[str, Composed]) -> dict[str, Any]:
    """Every row of the read model in a comparable form, read with `select(statement)` (dict rows)."""
    tasks = select(SQL("SELECT * FROM {} ORDER BY task_id").format(tables["tasks"]))
    accounts = select(SQL("SELECT * FROM {} ORDER BY account_id").format(tables["accounts"]))
    ledger = select(SQL("SELECT * FROM {} ORDER BY position").format(tables["ledger"]))
    return {  # the rows as their views' fields (what asdict of TaskView, AccountView, LedgerEntry gives)
        "tasks": sorted((plain_row({c: r[c] for c in TASK_COLUMNS}) for r in tasks), key=lambda r: r["task_id"]),
        "accounts": sorted(
            (plain_row({c: r[c] for c in ACCOUNT_COLUMNS}) for r in accounts), key=lambda r: r["account_id"]
        ),
        "ledger": [plain_row({c: r[c] for c in LEDGER_COLUMNS}) for r in ledger],
    }


def _task_params(task: TaskView) -> dict[str, Any]:
    return {k: _storable(k, v) for k, v in asdict(task).items()}


def _storable(column: str, value: Any) -> Any:
    """A value PostgreSQL accepts whatever an event held: text without NUL or lone surrogates, jsonb without
    \\u0000 or NaN (domain/text.py). A projection must never stop on data the domain accepted."""
    if column in JSON_COLUMNS:
        return Jsonb(clean_json(value)) if value is not None else None
    if isinstance(value, str):
        return clean_text(value)
    return value


def _task_view(row: DictRow) -> TaskView:
    return TaskView(**{k: row[k] for k in TASK_COLUMNS})


class TaskViewsBulkLoad:
    """The projection's writes folded in memory and loaded with COPY (for `mediatasks audit rebuild`).

    The same rows as PostgresTaskViews writes event by event: updates and ledger entries are
    appended and copied out page by page (`flush`); tasks and accounts change in memory and are
    copied once at the end (`finish`), with the secondary indexes built after the load.
    """

    def __init__(self, views: PostgresTaskViews | None, *, keep_updates: bool = True) -> None:
        self.views = views  # None: fold in memory only (audits compare its snapshot with the live model)
        self.keep_updates = keep_updates
        self.tasks: dict[UUID, dict[str, Any]] = {}
        self.accounts: dict[UUID, list[Any]] = {}
        self.user_ids: set[str] = set()
        self.updates: list[tuple[Any, ...]] = []
        self.entries: list[tuple[Any, ...]] = []
        self.position = 0

    # The writes TaskViewsProjection makes --------------------------------------------

    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        if task.task_id not in self.tasks:
            row = {c: getattr(task, c) for c in TASK_COLUMNS}  # the projection's values are not shared
            self.tasks[task.task_id] = row
            self._append_update(row, tracking.notification_id)

    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        row = self.tasks.get(task_id)
        if row is not None:
            row.update(changes)
            row["updated_at"], row["position"] = at, tracking.notification_id
            self._append_update(row, tracking.notification_id)

    def _append_update(self, row: dict[str, Any], position: int) -> None:
        if self.keep_updates:
            self.updates.append(
                (
                    position,
                    row["task_id"],
                    row["status"],
                    row["progress"],
                    row["attempt"],
                    row["stage"],
                    row["error"],
                    row["updated_at"],
                )
            )

    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        if account_id not in self.accounts and user_id not in self.user_ids:  # the table's keys
            self.accounts[account_id] = [account_id, user_id, 0, at, tracking.notification_id]
            self.user_ids.add(user_id)

    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        account = self.accounts.get(entry.account_id)
        if account is not None:
            account[2] += entry.amount
            account[3], account[4] = entry.at, tracking.notification_id
            balance = account[2]
        else:
            balance = entry.amount
        self.entries.append(
            (
                entry.position,
                entry.account_id,
                entry.kind,
                entry.amount,
                balance,
                entry.task_id,
                entry.attempt,
                entry.reason,
                entry.at,
            )
        )
        if entry.kind == "refund" and entry.task_id is not None and entry.task_id in self.tasks:
            self.tasks[entry.task_id]["refunded_credits"] += entry.amount

    def track_only(self, tracking: Tracking) -> None:
        self.position = tracking.notification_id

    def snapshot(self) -> dict[str, Any]:
        """What PostgresTaskViews.snapshot() would read after loading this fold."""
        return {
            "tasks": sorted((plain_row(dict(row)) for row in self.tasks.values()), key=lambda r: r["task_id"]),
            "accounts": sorted(
                (plain_row(dict(zip(ACCOUNT_COLUMNS, a, strict=True))) for a in self.accounts.values()),
                key=lambda r: r["account_id"],
            ),
            "ledger": [
                plain_row(dict(zip(LEDGER_COLUMNS, e, strict=True))) for e in sorted(self.entries, key=lambda e: e[0])
            ],
        }

    def snapshot_json(self) -> bytes | None:
        """`plain_json` of what `snapshot()` returns, without building the plain rows (None: use `snapshot()`)."""
        try:  # UUIDs in their order (UUID's own comparison, without its Python-level __lt__ per pair)
            tasks = sorted(self.tasks, key=_uuid_int)
            accounts = sorted(self.accounts, key=_uuid_int)
        except AttributeError:
            return None
        return plain_json(
            {
                "tasks": [self.tasks[k] for k in tasks],
                "accounts": [dict(zip(ACCOUNT_COLUMNS, self.accounts[k], strict=True)) for k in accounts],
                "ledger": [dict(zip(LEDGER_COLUMNS, e, strict=True)) for e in sorted(self.entries, key=_first)],
            }
        )

    # Loading ------------------------------------------------------------------------

    def drop_secondary_indexes(self) -> None:
        prefix, schema = self.views.prefix, self.views.datastore.schema
        with self.views.datastore.transaction(commit=True) as curs:
            for index in ("tasks_by_user", "tasks_open", "updates_by_task", "ledger_by_account"):
                curs.execute(
                    SQL("DROP INDEX IF EXISTS {}.{}").format(Identifier(schema), Identifier(f"{prefix}_{index}"))
                )

    def flush(self, curs: Any) -> None:
        """Copy out the appended rows (updates, ledger entries)."""
        self._copy(curs, "updates", UPDATE_COLUMNS, self.updates)
        self._copy(curs, "ledger", LEDGER_COLUMNS, self.entries)
        self.updates, self.entries = [], []

    def finish(self, curs: Any, application_name: str) -> None:
        """Copy the tasks and accounts, record the tracking position, build the indexes."""
        self.flush(curs)
        self._copy(curs, "tasks", TASK_COLUMNS, (tuple(row[c] for c in TASK_COLUMNS) for row in self.tasks.values()))
        self._copy(curs, "accounts", ACCOUNT_COLUMNS, (tuple(a) for a in self.accounts.values()))
        if self.position:
            self.views._insert_tracking(curs, Tracking(application_name, self.position))
        for statement in self.views.sql_create_statements:  # the indexes dropped before the load
            curs.execute(statement)

    def _copy(self, curs: Any, table: str, columns: tuple[str, ...], rows: Any) -> None:
        """Binary COPY (a fifth of text COPY's CPU here), jsonb values serialised by orjson."""
        set_json_dumps(_json_dumps, context=curs)
        statement = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.views.tables[table], SQL(", ").join(map(Identifier, columns))
        )
        with curs.copy(statement) as copy:
            copy.set_types([COLUMN_TYPES[c] for c in columns])
            for row in rows:
                copy.write_row(row)


COLUMN_TYPES = {
    "task_id": "uuid",
    "account_id": "uuid",
    "user_id": "text",
    "url": "text",
    "platform": "text",
    "output_type": "text",
    "languages": "jsonb",
    "status": "text",
    "progress": "int4",
    "attempt": "int4",
    "credits_charged": "int4",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
    "position": "int8",
    "stage": "text",
    "title": "text",
    "error": "jsonb",
    "result": "jsonb",
    "timings": "jsonb",
    "refunded_credits": "int4",
    "at": "timestamptz",
    "balance": "int8",
    "kind": "text",
    "amount": "int8",
    "reason": "text",
}


def _uuid_int(value: UUID) -> int:
    return value.int


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


def _json_dumps(value: Any) -> bytes:
    """orjson's text of a jsonb value (the json module's where orjson refuses it, e.g. ints past 64 bits)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value).encode()
