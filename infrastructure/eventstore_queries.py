"""Reads of the events table that eventsourcing's recorder interface does not offer."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from psycopg.sql import SQL, Identifier


def notification_ids(recorder: Any, originator_id: UUID) -> dict[int, int]:
    """Each version of an aggregate → its position in the application's log."""
    statement = SQL("SELECT originator_version, notification_id FROM {}.{} WHERE originator_id = %s").format(
        Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name)
    )
    with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
        curs.execute(statement, (originator_id,))
        return {row["originator_version"]: row["notification_id"] for row in curs.fetchall()}
