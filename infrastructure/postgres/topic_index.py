"""An index on the events table's (topic, notification_id): what every follower's read filters on.

eventsourcing's subscriptions read `WHERE notification_id > %s AND topic = ANY(%s) ORDER BY
notification_id LIMIT %s`. A follower of a rare topic (the refund issuer follows terminal `Failed`)
starts each read after its last matching event; with only the notification-id index PostgreSQL walks
every event since then at every NOTIFY and catch-up. With this index (and the topics written into the
prepared statement, one index range per topic: `TopicIndexReads`) a read costs the rows it returns. Created by `create_tables`
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
    """eventsourcing's `select_notifications` statement, one index range per topic.

    With `topic = ANY(...)` and `ORDER BY notification_id LIMIT n` PostgreSQL may walk the
    notification-id index and filter by topic (it did on a freshly loaded table: the webhook fan-out,
    whose topics are rare, then read every event since its last match at every poll). One branch per
    topic, each an ordered range of the (topic, notification_id) index with its own limit, costs the
    rows it returns whatever the statistics say. Topics are literals (a follower reads a fixed set:
    one prepared statement each); parameters are named: start, stop (when `has_stop`), limit.
    """
    table = SQL("{schema}.{table}").format(schema=Identifier(schema), table=Identifier(events_table))
    bounds = SQL("notification_id {op} %(start)s").format(op=SQL(">=" if inclusive_of_start else ">"))
    if has_stop:
        bounds += SQL(" AND notification_id <= %(stop)s")
    branches = [
        SQL(
            "(SELECT * FROM {table} WHERE topic = {topic} AND {bounds} ORDER BY notification_id LIMIT %(limit)s)"
        ).format(table=table, topic=Literal(topic), bounds=bounds)
        for topic in dict.fromkeys(topics)
    ]
    return SQL("SELECT * FROM ({branches}) AS matching ORDER BY notification_id LIMIT %(limit)s").format(
        branches=SQL(" UNION ALL ").join(branches)
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
        params = {"start": start or 0, "stop": stop, "limit": limit}
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
