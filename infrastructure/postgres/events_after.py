"""One read of the events several aggregates have had since the versions a process holds them at.

A process that keeps aggregates in memory (application/account_batches.py keeps accounts as it last
saved them) brings those another process may have written up to date before deciding on them: one
statement for all of them, an index range of the events table's primary key (originator_id,
originator_version) per aggregate, instead of one `select_events` each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent
from eventsourcing.utils import retry

from infrastructure.postgres.group_commit import events_table_statement


class EventsAfterReads:
    """Mixin for PostgreSQL aggregate recorders: `select_events_after`."""

    _events_after_statement: bytes | None = None

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events_after(self, positions: Sequence[tuple[UUID, int]]) -> list[StoredEvent]:
        """The events of each (originator id, version) after that version, in version order per originator."""
        if not positions:
            return []
        datastore: Any = self.datastore  # type: ignore[attr-defined]  # a mixin of eventsourcing's recorders
        if self._events_after_statement is None:
            self._events_after_statement = events_table_statement(
                self,
                "SELECT e.originator_id, e.originator_version, e.topic, e.state "
                "FROM unnest(%b::{id_type}[], %b::bigint[]) AS held(originator_id, version) "
                "JOIN {schema}.{table} e ON e.originator_id = held.originator_id "
                "AND e.originator_version > held.version "
                "ORDER BY e.originator_id, e.originator_version",
            )
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self._events_after_statement,
                ([p[0] for p in positions], [p[1] for p in positions]),
                prepare=True,
                binary=True,
            )
            return [
                StoredEvent(row["originator_id"], row["originator_version"], row["topic"], bytes(row["state"]))
                for row in curs.fetchall()
            ]
