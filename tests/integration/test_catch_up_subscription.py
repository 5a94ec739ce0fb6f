"""A lost NOTIFY does not stall a subscription: it also catches up every CATCH_UP_SECONDS."""

from __future__ import annotations

import threading
import uuid

import psycopg
from psycopg.sql import SQL, Identifier

from application.mediatasks import MediaTasks


def test_event_written_without_notify_is_still_delivered(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("quiet", 1)
    head = app.recorder.max_notification_id()
    received: list[int] = []
    with app.recorder.subscribe(gt=head) as subscription:

        def consume() -> None:
            for notification in subscription:
                received.append(notification.id)
                return

        thread = threading.Thread(target=consume, daemon=True)
        thread.start()
        # Write a row the way a lost NOTIFY would leave it: committed, but nobody told.
        schema = Identifier(store_env["POSTGRES_SCHEMA"])
        with psycopg.connect(
            host=store_env["POSTGRES_HOST"],
            port=store_env["POSTGRES_PORT"],
            user=store_env["POSTGRES_USER"],
            password=store_env["POSTGRES_PASSWORD"] or None,
            dbname=store_env["POSTGRES_DBNAME"],
            autocommit=True,
        ) as conn:
            conn.execute(
                SQL(
                    "INSERT INTO {}.mediatasks_events (originator_id, originator_version, topic, state) "
                    "SELECT %s, 1, topic, state FROM {}.mediatasks_events ORDER BY notification_id LIMIT 1"
                ).format(schema, schema),
                (uuid.uuid4(),),
            )
        thread.join(timeout=float(store_env["CATCH_UP_SECONDS"]) * 5 + 2)
    assert received and received[0] > head
