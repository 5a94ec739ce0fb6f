"""TaskViews in PostgreSQL: tables named after the projection, written with their tracking row."""

from __future__ import annotations

import json
import operator
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import datetime
from typing import Any
from uuid import UUID

import orjson
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresTrackingRecorder
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Composed, Identifier, Literal
from psycopg.types.json import Jsonb, set_json_dumps, set_json_loads

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

OPEN_STATUSES_SQL = SQL(", ").join(
    map(Literal, OPEN_STATUSES)
)  # the open statuses as literals: partial indexes match them

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
_ENTRY = 1 + len(ACCOUNT_COLUMNS)  # where an entry's columns begin in a row of account_at_position
# The read model is derived from the events: its commits need not wait for the disk (see _write_tracked).
ASYNCHRONOUS_COMMIT = SQL("SET LOCAL synchronous_commit = off")
Write = tuple[bytes, Any]  # one statement of the projection's writes and its parameters


def _view_position(schema: str, tracking_table_name: str, application_name: SQL) -> Composed:
    """The view's position for the application (the placeholder `application_name`), as `view_position`."""
    return SQL("(SELECT MAX(notification_id) FROM {}.{} WHERE application_name = {}) AS view_position").format(
        Identifier(schema), Identifier(tracking_table_name), application_name
    )


def _execute(curs: Any, writes: list[Write]) -> None:
    """The writes in order, each run of one statement as one `executemany`."""
    start = 0
    while start < len(writes):
        statement = writes[start][0]
        end = start + 1
        while end < len(writes) and writes[end][0] is statement:
            end += 1
        if end - start == 1:
            curs.execute(statement, writes[start][1], prepare=True)
        else:
            curs.executemany(statement, [params for _, params in writes[start:end]])
        start = end


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
                    Identifier(f"{prefix}_tasks_open"), t["tasks"], OPEN_STATUSES_SQL
                ),
                # A user's open tasks (the active-task cap's count): without it PostgreSQL counted them by
                # ANDing the user's tasks with every user's open tasks (tasks_open), a read of all of those.
                SQL("CREATE INDEX IF NOT EXISTS {} ON {} (user_id) WHERE status IN ({})").format(
                    Identifier(f"{prefix}_tasks_open_by_user"), t["tasks"], OPEN_STATUSES_SQL
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
        self._page = threading.local()
        self._statements = _WriteStatements(t)
        # A page's one tracking write: it moves the position to the page's last event only from before its
        # first (a rival runner that recorded any of the page's events makes it write nothing).
        self._page_tracking = SQL(
            "INSERT INTO {0}.{1} VALUES (%(application_name)s, %(last)s) ON CONFLICT (application_name) "
            "DO UPDATE SET notification_id = %(last)s WHERE {0}.{1}.notification_id < %(first)s "
            "RETURNING notification_id"
        ).format(Identifier(datastore.schema), Identifier(tracking_table_name))
        # A read-your-writes read: the view's position and the rows in one statement (one snapshot).
        tracking = (datastore.schema, tracking_table_name)
        self._task_at_position = SQL(
            "SELECT {}, t.* FROM (VALUES (1)) AS one LEFT JOIN {} AS t ON t.task_id = %s"
        ).format(_view_position(*tracking, SQL("%s")), t["tasks"])
        # The account's: one row per entry of the page (the position and the account repeated on each), or one
        # row with no entry; an account's entries are read whether or not it has a row, as `ledger` reads them.
        self._account_at_position = SQL(
            "SELECT {view_position}, {account}, {entry} FROM (VALUES (1)) AS one "
            "LEFT JOIN {accounts} AS a ON a.account_id = %(account_id)s "
            "LEFT JOIN LATERAL (SELECT * FROM {ledger} WHERE account_id = %(account_id)s AND position < %(before)s "
            "ORDER BY position DESC LIMIT %(limit)s) AS e ON true ORDER BY e.position DESC"
        ).format(
            view_position=_view_position(*tracking, SQL("%(application_name)s")),
            account=SQL(", ").join(SQL("a.{}").format(Identifier(c)) for c in ACCOUNT_COLUMNS),
            entry=SQL(", ").join(SQL("e.{}").format(Identifier(c)) for c in LEDGER_COLUMNS),
            accounts=t["accounts"],
            ledger=t["ledger"],
        )
        self._ledger_page = SQL(
            "SELECT * FROM {} WHERE account_id = %s AND position < %s ORDER BY position DESC LIMIT %s"
        ).format(t["ledger"])

    # Writes ---------------------------------------------------------------------

    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        params = _task_params(task)
        params["_position"] = tracking.notification_id
        self._write_tracked(tracking, [(self._statements.task_started, params)])

    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        params = {k: _storable(k, v) for k, v in changes.items()}
        params.update(_task_id=task_id, updated_at=at, position=tracking.notification_id)
        self._write_tracked(tracking, [(self._statements.task_changed(tuple(changes)), params)])

    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        params = (account_id, clean_text(user_id), at, tracking.notification_id)
        self._write_tracked(tracking, [(self._statements.account_opened, params)])

    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        params = {
            "amount": entry.amount,
            "at": entry.at,
            "position": tracking.notification_id,
            "account_id": entry.account_id,
            "entry_position": entry.position,
            "kind": clean_text(entry.kind),
            "task_id": entry.task_id,
            "attempt": entry.attempt,
            "reason": clean_text(entry.reason),
        }
        writes: list[Write] = [(self._statements.account_changed, params)]
        if entry.kind == "refund" and entry.task_id is not None:
            writes.append((self._statements.task_refunded, (entry.amount, entry.task_id)))
        self._write_tracked(tracking, writes)

    def track_only(self, tracking: Tracking) -> None:
        self._write_tracked(tracking, [])

    def _write_tracked(self, tracking: Tracking, writes: list[Write]) -> None:
        """Record the tracking position and the change in one transaction.

        If a rival runner (a standby taking over) recorded this position already, the
        change is dropped: the view has it. The commit does not wait for the WAL flush
        (synchronous_commit off): a crash can lose the last few view changes, but always
        with their tracking positions, so the projection redoes them from the events.
        """
        page = getattr(self._page, "writes", None)
        if page is not None:  # inside page(): written at its end, its one tracking write covering them
            page.extend(writes)
            return
        batch = getattr(self._batch, "curs", None)
        if batch is not None:  # inside batch(): one transaction for many events
            self._insert_tracking(batch, tracking)
            _execute(batch, writes)
            return
        try:
            with self.datastore.transaction(commit=True) as curs:
                curs.execute(ASYNCHRONOUS_COMMIT)
                self._insert_tracking(curs, tracking)
                _execute(curs, writes)
        except IntegrityError:
            if not self.has_tracking_id(tracking.application_name, tracking.notification_id):
                raise

    @contextmanager
    def page(self, first: Tracking, last: Tracking) -> Iterator[None]:
        """Apply a page of consecutive events (`first` … `last`) in one transaction with one tracking
        write: all of them, or none (IntegrityError when a rival runner recorded any of them: then
        apply them one by one, each dropped if the view has it).

        The events' writes are collected and sent at the end, the tasks' before the accounts' (each in
        the events' order), each run of the same statement as one `executemany` (psycopg pipelines it);
        none records a tracking row of its own (single-row tracking: the position is the page's last
        event)."""
        if not self.datastore.single_row_tracking:  # one row per position: each event writes its own
            with self.batch():
                yield
            return
        writes: list[Write] = []
        self._page.writes = writes
        try:
            yield
        finally:
            self._page.writes = None
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(ASYNCHRONOUS_COMMIT)
            curs.execute(
                self._page_tracking,
                {
                    "application_name": first.application_name,
                    "first": first.notification_id,
                    "last": last.notification_id,
                },
                prepare=True,
            )
            if curs.fetchone() is None:
                raise IntegrityError(f"positions {first.notification_id}–{last.notification_id} recorded already")
            _execute(curs, self._statements.by_table(writes))

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

    def task_at_position(self, task_id: UUID, application_name: str) -> tuple[int | None, TaskView | None]:
        """One statement: the position and the row come from one snapshot."""
        (row,) = self._select(self._task_at_position, (application_name, task_id))
        return row["view_position"], _task_view(row) if row["task_id"] is not None else None

    def account_at_position(
        self, user_id: str, application_name: str, *, limit: int = 50, before: int | None = None
    ) -> tuple[int | None, AccountView | None, list[LedgerEntry]]:
        """One statement: the position, the account and its page of entries come from one snapshot."""
        params = {
            "application_name": application_name,
            "account_id": CreditAccount.id_for(user_id),
            "before": before if before is not None else 2**62,
            "limit": limit,
        }

        def read() -> list[tuple[Any, ...]]:
            with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
                curs.execute(self._account_at_position, params)
                return curs.fetchall()

        rows = read_retried(self.datastore, read)
        first = rows[0]
        account = AccountView(*first[1:_ENTRY]) if first[1] is not None else None
        entries = [LedgerEntry(*row[_ENTRY:]) for row in rows if row[_ENTRY] is not None]
        return first[0], account, entries

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
            self._ledger_page, (CreditAccount.id_for(user_id), before if before is not None else 2**62, limit)
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
        def read() -> dict[str, Any]:
            with self.datastore.get_connection() as conn, conn.transaction():
                return read_snapshot(conn, self.tables)

        return read_retried(self.datastore, read)

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


class _WriteStatements:
    """The projection's write statements, one per event, rendered once (the task's changed columns: once
    per set of them). Each is the same bytes object every time, so that a page's runs of it are found."""

    def __init__(self, t: dict[str, Composed]) -> None:
        self.tables = t
        # The task's row, and its first update from the row: the one inserted, or (the task's row there
        # already) the one there (the statement's snapshot sees the table as it was before the insert).
        self.task_started = _rendered(
            SQL(
                "WITH inserted AS (INSERT INTO {tasks} ({columns}) VALUES ({values}) ON CONFLICT (task_id) DO NOTHING "
                "RETURNING {update_columns}) "
                "INSERT INTO {updates} (position, task_id, status, progress, attempt, stage, error, at) "
                "SELECT %(_position)s, {update_columns} FROM inserted UNION ALL "
                "SELECT %(_position)s, {update_columns} FROM {tasks} "
                "WHERE task_id = %(task_id)s AND NOT EXISTS (SELECT FROM inserted) "
                "ON CONFLICT DO NOTHING"
            ).format(
                tasks=t["tasks"],
                updates=t["updates"],
                columns=_columns(TASK_COLUMNS),
                values=SQL(", ").join(SQL("%({})s").format(SQL(c)) for c in TASK_COLUMNS),
                update_columns=SQL(_UPDATE_SOURCE),
            )
        )
        self.account_opened = _rendered(
            SQL(
                "INSERT INTO {} (account_id, user_id, balance, updated_at, position) "
                "VALUES (%s, %s, 0, %s, %s) ON CONFLICT DO NOTHING"
            ).format(t["accounts"])
        )
        # The entry's balance is the account's after the change (its amount when there is no account row).
        self.account_changed = _rendered(
            SQL(
                "WITH changed AS (UPDATE {} SET balance = balance + %(amount)s, updated_at = %(at)s, "
                "position = %(position)s WHERE account_id = %(account_id)s RETURNING balance) "
                "INSERT INTO {} (position, account_id, kind, amount, balance, task_id, attempt, reason, at) "
                "VALUES (%(entry_position)s, %(account_id)s, %(kind)s, %(amount)s, "
                "coalesce((SELECT balance FROM changed), %(amount)s), %(task_id)s, %(attempt)s, %(reason)s, %(at)s)"
            ).format(t["accounts"], t["ledger"])
        )
        self.task_refunded = _rendered(
            SQL("UPDATE {} SET refunded_credits = refunded_credits + %s WHERE task_id = %s").format(t["tasks"])
        )
        self._task_changed: dict[tuple[str, ...], bytes] = {}
        self._of_accounts = {self.account_opened, self.account_changed}  # the rest write tasks and updates

    def by_table(self, writes: list[Write]) -> list[Write]:
        """The writes of the tasks and their updates, then those of the accounts and their ledger, each in
        their order: no statement of one reads the other's tables, so a page's events (a task, its account's
        charge, the next task, ...) become one run of each statement instead of a run of one per event."""
        of_accounts = self._of_accounts
        tasks = [w for w in writes if w[0] not in of_accounts]
        if len(tasks) == len(writes):
            return writes
        return tasks + [w for w in writes if w[0] in of_accounts]

    def task_changed(self, columns: tuple[str, ...]) -> bytes:
        """The task's row updated and, if there is one, its update appended (from the changed row)."""
        statement = self._task_changed.get(columns)
        if statement is None:
            assignments = SQL(", ").join(
                SQL("{} = %({})s").format(Identifier(k), SQL(k)) for k in [*columns, "updated_at", "position"]
            )
            statement = self._task_changed[columns] = _rendered(
                SQL(
                    "WITH changed AS (UPDATE {} SET {} WHERE task_id = %(_task_id)s RETURNING {}) "
                    "INSERT INTO {} (position, task_id, status, progress, attempt, stage, error, at) "
                    "SELECT %(position)s, {} FROM changed ON CONFLICT DO NOTHING"
                ).format(
                    self.tables["tasks"],
                    assignments,
                    SQL(_UPDATE_SOURCE),
                    self.tables["updates"],
                    SQL(_UPDATE_SOURCE),
                )
            )
        return statement


_UPDATE_SOURCE = "task_id, status, progress, attempt, stage, error, updated_at"  # a task row's columns of an update


def _rendered(statement: Composed) -> bytes:
    return statement.as_bytes(None)


def view_tables(schema: str, prefix: str) -> dict[str, Composed]:
    """The read model's tables, schema-qualified."""
    return {
        name: SQL("{}.{}").format(Identifier(schema), Identifier(f"{prefix}_{name}"))
        for name in ("tasks", "updates", "accounts", "ledger")
    }


SNAPSHOT_TABLES = ("tasks", "accounts", "ledger")  # what `snapshot()` holds (the updates follow from the events)


def read_snapshot(
    conn: Any,
    tables: dict[str, Composed],
    which: tuple[str, ...] = SNAPSHOT_TABLES,
    where: dict[str, Composed] | None = None,
) -> dict[str, Any]:
    """Every row of the read model in a comparable form: each row as `plain_row` gives its view's fields
    (what asdict of TaskView, AccountView, LedgerEntry gives), tasks and accounts by id, the ledger by position
    (`which`: only these of the tables; `where`: a table's rows that meet a condition).

    PostgreSQL writes each table as one JSON array (uuids as their text, timestamps as
    `datetime.isoformat()` writes them in UTC, jsonb as it is) and orjson reads it: no row or value
    passes through Python one by one."""
    snapshot = {}
    for table, columns, order in (
        ("tasks", TASK_COLUMNS, "task_id"),  # a uuid's order is its text's (lowercase hex, fixed length)
        ("accounts", ACCOUNT_COLUMNS, "account_id"),
        ("ledger", LEDGER_COLUMNS, "position"),
    ):
        if table not in which:
            continue
        fields = SQL(", ").join(
            SQL("{}, {}").format(Literal(c), _iso_utc(c) if COLUMN_TYPES[c] == "timestamptz" else Identifier(c))
            for c in columns
        )
        with conn.cursor(row_factory=tuple_row) as curs:
            curs.execute(
                SQL("SELECT coalesce(json_agg(json_build_object({}) ORDER BY {}), '[]')::text FROM {} WHERE {}").format(
                    fields, Identifier(order), tables[table], (where or {}).get(table, SQL("true"))
                )
            )
            row = curs.fetchone()
        snapshot[table] = _json_loads(row[0])
    return snapshot


class BackgroundSnapshot:
    """The read model's tracking position and `read_snapshot` of it, in one REPEATABLE READ snapshot, read
    in a thread: PostgreSQL builds the rows' JSON on another core while the caller replays the events."""

    def __init__(self, views: PostgresTaskViews, application_name: str) -> None:
        self._position: Future[int] = Future()
        self._rows: Future[dict[str, Any]] = Future()
        threading.Thread(
            target=self._read, args=(views, application_name), name="read-model-snapshot", daemon=True
        ).start()

    def position(self) -> int:
        """The position the rows reflect (0 before the first event)."""
        return self._position.result()

    def rows(self) -> dict[str, Any]:
        return self._rows.result()

    def _read(self, views: PostgresTaskViews, application_name: str) -> None:
        try:
            with views.datastore.get_connection() as conn, conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute(
                    SQL("SELECT max(notification_id) FROM {}.{} WHERE application_name = %s").format(
                        Identifier(views.datastore.schema), Identifier(views.tracking_table_name)
                    ),
                    (application_name,),
                ).fetchone()
                values = list(row.values()) if isinstance(row, dict) else list(row or ())
                self._position.set_result((values[0] if values else None) or 0)
                self._rows.set_result(read_snapshot(conn, views.tables))
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits for the result
            for future in (self._position, self._rows):
                if not future.done():
                    future.set_exception(error)


def _iso_utc(column: str) -> Composed:
    """A timestamptz as text, the way `datetime.isoformat()` writes it in UTC (`plain_row`'s form of a datetime):
    microseconds only when there are any."""
    utc = SQL("({} AT TIME ZONE 'UTC')").format(Identifier(column))
    return SQL(
        "to_char({u}, 'YYYY-MM-DD\"T\"HH24:MI:SS') "
        "|| CASE WHEN date_trunc('second', {u}) = {u} THEN '' ELSE to_char({u}, '.US') END || '+00:00'"
    ).format(u=utc)


def _json_loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # what orjson refuses (numbers past 64 bits): the json module's reading
        return json.loads(data)


def read_model_differences(
    fold: TaskViewsBulkLoad, live: dict[str, Any], which: tuple[str, ...] = SNAPSHOT_TABLES
) -> list[str]:
    """Each row where `live` (`snapshot()` of a read model, or `which` of its tables) differs from the fold's:
    equal `snapshot_json` bytes first (then nothing differs), row by row only when they differ."""
    live = {table: live[table] for table in which}
    fresh_json = fold.snapshot_json(which)
    if fresh_json is not None and fresh_json == plain_json(live):
        return []
    fresh = fold.snapshot(which)
    if fresh == live:
        return []
    found = []
    for table in which:
        live_rows = {_row_key(r): r for r in live[table]}
        for row in fresh[table]:
            if live_rows.pop(_row_key(row), None) != row:
                found.append(f"{table} row {_row_key(row)} differs from a rebuild")
        found.extend(f"{table} row {key} is not in a rebuild" for key in live_rows)
    return found


def _row_key(row: dict[str, Any]) -> str:
    return str(row.get("task_id") or row.get("account_id") or row.get("position"))


def _task_params(task: TaskView) -> dict[str, Any]:
    return {k: _storable(k, getattr(task, k)) for k in TASK_COLUMNS}


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


class FoldPosition:
    """The `Tracking` a fold into a `TaskViewsBulkLoad` reads (its position only, never kept), one object
    moved along: no frozen dataclass built per event."""

    __slots__ = ("application_name", "notification_id")

    def __init__(self, application_name: str) -> None:
        self.application_name = application_name
        self.notification_id = 0


def folded(
    events: Iterable[tuple[int, Any]],
    process: Callable[[Any, Any], None],
    application_name: str,
    up_to: int,
    failed: Callable[[int, Any, Exception], None],
) -> Iterator[tuple[int, Any]]:
    """Each (position, event), folded by `process` (a projection's dispatcher) on the way up to `up_to`;
    `failed(position, event, error)` for one it cannot apply (a forged state), and the fold goes on."""
    tracking = FoldPosition(application_name)
    for position, event in events:
        if position <= up_to:
            tracking.notification_id = position
            try:
                process(event, tracking)
            except Exception as error:  # noqa: BLE001 - named by `failed`
                failed(position, event, error)
        yield position, event


class TaskViewsBulkLoad:
    """The projection's writes folded in memory and loaded with COPY (for `mediatasks audit rebuild`).

    The same rows as PostgresTaskViews writes event by event: updates and ledger entries are
    appended and copied out page by page (`flush`); tasks and accounts change in memory and are
    copied once at the end (`finish`), with the secondary indexes built after the load. A long load
    commits now and then (`commit`: the rows changed since the last commit, upserted, and the
    position), and an interrupted one is resumed from what it committed (`restore`).
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
        self.committed = False  # rows of it are in the tables already (upsert, do not copy, what changed)
        self._committed_at = 0
        # What changed since the last commit; None before the first (then all of it is new: no set kept
        # per event) and in an audit's fold.
        self._changed_tasks: set[UUID] | None = None
        self._changed_accounts: set[UUID] | None = None

    # The writes TaskViewsProjection makes --------------------------------------------

    def task_started(self, task: TaskView, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        if task.task_id not in self.tasks:
            row = dict(vars(task))  # its fields are TASK_COLUMNS, in order; the projection's values are not shared
            self.tasks[task.task_id] = row
            self._append_update(row, tracking.notification_id)
            if self._changed_tasks is not None:
                self._changed_tasks.add(task.task_id)

    def task_changed(self, task_id: UUID, changes: dict[str, Any], at: datetime, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        row = self.tasks.get(task_id)
        if row is not None:
            row.update(changes)
            row["updated_at"], row["position"] = at, tracking.notification_id
            self._append_update(row, tracking.notification_id)
            if self._changed_tasks is not None:
                self._changed_tasks.add(task_id)

    def _append_update(self, row: dict[str, Any], position: int) -> None:
        if self.keep_updates:
            self.updates.append((position, *_update_fields(row)))

    def account_opened(self, account_id: UUID, user_id: str, at: datetime, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        if account_id not in self.accounts and user_id not in self.user_ids:  # the table's keys
            self.accounts[account_id] = [account_id, user_id, 0, at, tracking.notification_id]
            self.user_ids.add(user_id)
            if self._changed_accounts is not None:
                self._changed_accounts.add(account_id)

    def account_changed(self, entry: LedgerEntry, tracking: Tracking) -> None:
        self.position = tracking.notification_id
        account = self.accounts.get(entry.account_id)
        if account is not None:
            account[2] += entry.amount
            account[3], account[4] = entry.at, tracking.notification_id
            balance = account[2]
            if self._changed_accounts is not None:
                self._changed_accounts.add(entry.account_id)
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
            if self._changed_tasks is not None:
                self._changed_tasks.add(entry.task_id)

    def track_only(self, tracking: Tracking) -> None:
        self.position = tracking.notification_id

    def snapshot(self, which: tuple[str, ...] = SNAPSHOT_TABLES) -> dict[str, Any]:
        """What PostgresTaskViews.snapshot() would read after loading this fold (`which` of its tables)."""
        tables = {
            "tasks": lambda: sorted((plain_row(dict(row)) for row in self.tasks.values()), key=lambda r: r["task_id"]),
            "accounts": lambda: sorted(
                (plain_row(dict(zip(ACCOUNT_COLUMNS, a, strict=True))) for a in self.accounts.values()),
                key=lambda r: r["account_id"],
            ),
            "ledger": lambda: [
                plain_row(dict(zip(LEDGER_COLUMNS, e, strict=True))) for e in sorted(self.entries, key=lambda e: e[0])
            ],
        }
        return {table: tables[table]() for table in which}

    def snapshot_json(self, which: tuple[str, ...] = SNAPSHOT_TABLES) -> bytes | None:
        """`plain_json` of what `snapshot(which)` returns, without building the plain rows (None: use `snapshot()`).

        Datetimes are written by orjson itself, which for a UTC datetime is `plain_row`'s form
        (`isoformat()`); one in another offset writes differently, so it can make the bytes unequal
        (then the rows are compared), never equal where the plain rows differ."""
        tables: dict[str, Any] = {}
        try:  # UUIDs in their order (UUID's own comparison, without its Python-level __lt__ per pair)
            if "tasks" in which:
                tables["tasks"] = [self.tasks[k] for k in sorted(self.tasks, key=_uuid_int)]
            if "accounts" in which:
                accounts = sorted(self.accounts, key=_uuid_int)
                tables["accounts"] = [dict(zip(ACCOUNT_COLUMNS, self.accounts[k], strict=True)) for k in accounts]
        except AttributeError:
            return None
        if "ledger" in which:
            tables["ledger"] = [dict(zip(LEDGER_COLUMNS, e, strict=True)) for e in sorted(self.entries, key=_first)]
        return plain_json({table: tables[table] for table in which}, native_datetimes=True)

    # Loading ------------------------------------------------------------------------

    def drop_secondary_indexes(self) -> None:
        prefix, schema = self.views.prefix, self.views.datastore.schema
        with self.views.datastore.transaction(commit=True) as curs:
            for index in ("tasks_by_user", "tasks_open", "tasks_open_by_user", "updates_by_task", "ledger_by_account"):
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
        if self.committed:
            self.commit(curs, application_name)
        else:
            self.flush(curs)
            self._copy(curs, "tasks", TASK_COLUMNS, map(_task_fields, self.tasks.values()))
            self._copy(curs, "accounts", ACCOUNT_COLUMNS, (tuple(a) for a in self.accounts.values()))
            if self.position:
                self.views._insert_tracking(curs, Tracking(application_name, self.position))
        for statement in self.views.sql_create_statements:  # the indexes dropped before the load
            curs.execute(statement)

    def commit(self, curs: Any, application_name: str) -> None:
        """Write what the tables lack so far, in the caller's transaction: the appended rows, the tasks
        and accounts changed since the last commit (upserted), and the position they reflect."""
        self.flush(curs)
        changed_tasks = self.tasks if self._changed_tasks is None else self._changed_tasks  # None: all are new
        changed_accounts = self.accounts if self._changed_accounts is None else self._changed_accounts
        tasks = (_task_fields(self.tasks[t]) for t in changed_tasks)
        self._upsert(curs, "tasks", TASK_COLUMNS, "task_id", tasks)
        accounts = (tuple(self.accounts[a]) for a in changed_accounts)
        self._upsert(curs, "accounts", ACCOUNT_COLUMNS, "account_id", accounts)
        if self.position > self._committed_at:
            self.views._insert_tracking(curs, Tracking(application_name, self.position))
        self._changed_tasks, self._changed_accounts = set(), set()
        self._committed_at = self.position
        self.committed = True

    def restore(self, application_name: str) -> int:
        """The fold as the tables hold it after its last commit (tasks and accounts back in memory);
        returns the position it reflects, from which the load goes on."""
        position = self.views.max_tracking_id(application_name) or 0
        with self.views.datastore.transaction(commit=False) as curs:
            set_json_loads(_json_loads, context=curs)
            curs.execute(SQL("SELECT {} FROM {}").format(_columns(TASK_COLUMNS), self.views.tables["tasks"]))
            self.tasks = {row["task_id"]: {c: row[c] for c in TASK_COLUMNS} for row in curs}
            curs.execute(SQL("SELECT {} FROM {}").format(_columns(ACCOUNT_COLUMNS), self.views.tables["accounts"]))
            self.accounts = {row["account_id"]: [row[c] for c in ACCOUNT_COLUMNS] for row in curs}
        self.user_ids = {account[1] for account in self.accounts.values()}
        self.position = self._committed_at = position
        self.committed = True
        self._changed_tasks, self._changed_accounts = set(), set()
        return position

    def _upsert(self, curs: Any, table: str, columns: tuple[str, ...], key: str, rows: Any) -> None:
        """COPY into a temporary table, then INSERT … ON CONFLICT DO UPDATE from it."""
        staging = Identifier(f"rebuild_{table}")
        curs.execute(
            SQL("CREATE TEMPORARY TABLE IF NOT EXISTS {} (LIKE {}) ON COMMIT DELETE ROWS").format(
                staging, self.views.tables[table]
            )
        )
        self._copy(curs, table, columns, rows, into=staging)
        curs.execute(
            SQL("INSERT INTO {} ({}) SELECT {} FROM {} ON CONFLICT ({}) DO UPDATE SET {}").format(
                self.views.tables[table],
                _columns(columns),
                _columns(columns),
                staging,
                Identifier(key),
                SQL(", ").join(SQL("{} = EXCLUDED.{}").format(Identifier(c), Identifier(c)) for c in columns),
            )
        )
        curs.execute(SQL("DELETE FROM {}").format(staging))

    def _copy(self, curs: Any, table: str, columns: tuple[str, ...], rows: Any, *, into: Any = None) -> None:
        """Binary COPY (a fifth of text COPY's CPU here), jsonb values serialised by orjson."""
        set_json_dumps(_json_dumps, context=curs)
        statement = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            self.views.tables[table] if into is None else into, _columns(columns)
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


_task_fields = operator.itemgetter(*TASK_COLUMNS)  # a task row's values in TASK_COLUMNS' order
_update_fields = operator.itemgetter(*UPDATE_COLUMNS[1:-1], "updated_at")  # its update's, after the position


def _columns(columns: tuple[str, ...]) -> Composed:
    return SQL(", ").join(map(Identifier, columns))


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
