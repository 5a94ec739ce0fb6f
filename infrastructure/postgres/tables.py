"""Where a deployment's database comes from, and every table created once.

Each adapter creates its own table (`create_table`); `create_tables` calls them all, one process at
a time (an advisory lock), so that processes starting together do not race on DDL.
"""

from __future__ import annotations

from typing import Any

from eventsourcing.persistence import InfrastructureFactory
from eventsourcing.postgres import PostgresTrackingRecorder
from eventsourcing.utils import Environment

VIEWS_NAME = "TaskViews"
TABLES_LOCK_ID = 0x6D65646961  # advisory lock: one process creates tables at a time
PUBLISHER_TRACKING_TABLE = "qstashpublisher_tracking"  # how far the QStash outbox publisher has published


def resolve_postgres_env(database_url: str | None, data_dir: str) -> dict[str, str]:
    """eventsourcing's POSTGRES_* settings for the configured database, else for the embedded server."""
    from infrastructure.postgres.embedded_server import postgres_env_from_url, start_embedded_postgres

    if database_url is not None:
        return postgres_env_from_url(database_url)
    return postgres_env_from_url(start_embedded_postgres(data_dir))


def named_env(name: str, env: dict[str, str]) -> Environment:
    """`env` as the application or projection called `name` reads it."""
    return Environment(name, env)


def create_tables(env: dict[str, str], views_name: str = VIEWS_NAME) -> None:
    """Create every table once (serialised across processes by an advisory lock)."""
    from application.mediatasks import MediaTasks
    from infrastructure.postgres import stream_token_secret
    from infrastructure.postgres.audit_seal import PostgresSeal
    from infrastructure.postgres.metadata_cache import PostgresMetadataCache
    from infrastructure.postgres.seen_token_ids import PostgresSeenTokenIds
    from infrastructure.postgres.task_views import PostgresTaskViews
    from infrastructure.postgres.topic_index import create_topic_index
    from infrastructure.postgres.user_limits import PostgresUserLimits
    from infrastructure.postgres.views_pointer import ensure_pointer
    from infrastructure.postgres.webhook_store import PostgresWebhookStore

    create_env = {**env, "CREATE_TABLE": "yes"}
    factory = InfrastructureFactory.construct(env=named_env("MediaTasks", create_env))
    datastore = factory.datastore  # type: ignore[attr-defined]  # the PostgreSQL factory's, not on the base class
    with datastore.get_connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (TABLES_LOCK_ID,))
        try:
            if datastore.schema != "public":  # under the lock: two IF NOT EXISTS at once can still collide
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{datastore.schema}"')
            app = MediaTasks(env=create_env)
            app.close()
            factory.process_recorder()
            create_topic_index(datastore, app.recorder.events_table_name)  # type: ignore[attr-defined]
            ensure_pointer(datastore)
            PostgresMetadataCache(datastore).create_table()
            PostgresSeenTokenIds(datastore).create_table()
            stream_token_secret.create_table(datastore)
            publisher_tracking(datastore).create_table()
            PostgresSeal(datastore).create_table()
            PostgresWebhookStore(datastore).create_tables()
            PostgresUserLimits(datastore).create_table()
            views = InfrastructureFactory.construct(env=named_env(views_name, create_env))
            views.tracking_recorder(PostgresTaskViews)
            views.close()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (TABLES_LOCK_ID,))
    factory.close()


def construct_views(env: dict[str, str], views_name: str = VIEWS_NAME) -> Any:
    """The PostgreSQL TaskViews called `views_name`, with a datastore of its own."""
    from infrastructure.postgres.task_views import PostgresTaskViews

    return InfrastructureFactory.construct(env=named_env(views_name, env)).tracking_recorder(PostgresTaskViews)


def publisher_tracking(datastore: Any) -> PostgresTrackingRecorder:
    """The tracking recorder of the QStash outbox publisher (how far it has published)."""
    return PostgresTrackingRecorder(datastore, tracking_table_name=PUBLISHER_TRACKING_TABLE)
