"""An index on the events table's (topic, notification_id): what every follower's read filters on.

eventsourcing's subscriptions read `WHERE notification_id > %s AND topic = ANY(%s) ORDER BY
notification_id LIMIT %s`. A follower of a rare topic (the refund issuer follows terminal `Failed`)
starts each read after its last matching event; with only the notification-id index PostgreSQL walks
every event since then at every NOTIFY and catch-up. With this index (and the topics written into the
prepared statement, `TopicIndexReads`) a read costs the rows it returns. Created by `create_tables`
(eventsourcing's table creation is left as it is); idempotent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, Notification, OperationalError
from eventsourcing.utils import retry
from psycopg.sql import SQL, Composed, Identifier, Literal


def topic_index_name(events_table: str) -> str:
    return f"{events_table}_topic_notification_id_idx"


def create_topic_index(datastore: Any, events_table: str) -> None:
    statement = SQL("CREATE INDEX IF NOT EXISTS {index} ON {schema}.{table} (topic, notification_id)").format(
        index=Identifier(topic_index_name(events_table)),
        schema=Identifier(datastore.schema),
        table=Identifier(events_table),
    )
    with datastore.get_connection() as conn:
        conn.execute(statement)


def topic_reads_statement(
    schema: str, events_table: str, topics: Sequence[str], *, inclusive_of_start: bool, has_stop: bool
) -> Composed:
    """eventsourcing's `select_notifications` statement with the topics written in as a literal.

    The statement is prepared; with the topics a parameter, PostgreSQL's generic plan cannot know how
    rare they are and walks the notification-id index from the start. Each follower reads a fixed
    set of topics, so a literal costs one prepared statement per follower and lets the plan use the
    (topic, notification_id) index.
    """
    statement = SQL("SELECT * FROM {schema}.{table} WHERE notification_id {op} %s").format(
        schema=Identifier(schema), table=Identifier(events_table), op=SQL(">=" if inclusive_of_start else ">")
    )
    if has_stop:
        statement += SQL(" AND notification_id <= %s")
    return statement + SQL(" AND topic = ANY({topics}::text[]) ORDER BY notification_id LIMIT %s").format(
        topics=Literal(list(topics))
    )


class TopicIndexReads:
    """Mixin for PostgreSQL application recorders: topic-filtered reads that use the topic index."""

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        if not topics:
            return super().select_notifications(  # type: ignore[misc]
                start, limit, stop, topics, inclusive_of_start=inclusive_of_start
            )
        recorder: Any = self
        statement = topic_reads_statement(
            recorder.datastore.schema,
            recorder.events_table_name,
            topics,
            inclusive_of_start=inclusive_of_start,
            has_stop=stop is not None,
        )
        params = [start or 0, *([stop] if stop is not None else []), limit]
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                Notification(
                    id=row["notification_id"],
                    originator_id=row["originator_id"],
                    originator_version=row["originator_version"],
                    topic=row["topic"],
                    state=bytes(row["state"]),
                )
                for row in curs.fetchall()
            ]
