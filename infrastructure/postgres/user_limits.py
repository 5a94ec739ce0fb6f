"""Per-user overrides of the rate limits and the active-task cap, and the count of a user's active tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from eventsourcing.postgres import PostgresDatastore
from psycopg.sql import SQL, Composed, Identifier

from infrastructure.postgres.task_views import OPEN_STATUSES_SQL


@dataclass(frozen=True)
class UserLimits:
    """A user's overrides (None: the default from the settings)."""

    rate_limit_submissions: str | None = None
    rate_limit_reads: str | None = None
    max_active_tasks: int | None = None


class PostgresUserLimits:
    """Per-user overrides, set by operators through `PATCH /v1/admin/users/{id}`."""

    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self.table = SQL("{}.{}").format(Identifier(datastore.schema), Identifier("user_limits"))

    def create_table(self) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {} (user_id text PRIMARY KEY, rate_limit_submissions text, "
                    "rate_limit_reads text, max_active_tasks integer)"
                ).format(self.table)
            )

    def get(self, user_id: str) -> UserLimits:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT * FROM {} WHERE user_id = %s").format(self.table), (user_id,))
            row = curs.fetchone()
        if row is None:
            return UserLimits()
        return UserLimits(row["rate_limit_submissions"], row["rate_limit_reads"], row["max_active_tasks"])

    def put(self, user_id: str, limits: UserLimits) -> None:
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(
                SQL(
                    "INSERT INTO {} (user_id, rate_limit_submissions, rate_limit_reads, max_active_tasks) "
                    "VALUES (%s, %s, %s, %s) ON CONFLICT (user_id) DO UPDATE SET "
                    "rate_limit_submissions = EXCLUDED.rate_limit_submissions, "
                    "rate_limit_reads = EXCLUDED.rate_limit_reads, "
                    "max_active_tasks = EXCLUDED.max_active_tasks"
                ).format(self.table),
                (user_id, limits.rate_limit_submissions, limits.rate_limit_reads, limits.max_active_tasks),
            )


def active_task_count(views: Any, user_id: str) -> int:
    """The user's tasks not yet extracted or failed, in the read model `views` (a PostgresTaskViews)."""
    with views.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(active_task_count_statement(views), (user_id,))
        row = curs.fetchone()
    return int(row["n"]) if row else 0


def active_task_count_statement(views: Any) -> Composed:
    """The count of one user's (%s) open tasks; the statuses as literals, so that every plan of it can take
    the read model's partial index of open tasks by user (`…_tasks_open_by_user`)."""
    return SQL("SELECT count(*) AS n FROM {} WHERE user_id = %s AND status IN ({})").format(
        views.tables["tasks"], OPEN_STATUSES_SQL
    )
