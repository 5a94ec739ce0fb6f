"""Followers' topic-filtered reads: the (topic, notification_id) index exists and their statement uses it."""

from __future__ import annotations

import psycopg
from eventsourcing.utils import get_topic

from application.mediatasks import MediaTasks
from domain.tasks import MediaTask
from infrastructure.postgres.topic_index import topic_index_name, topic_reads_statement
from tests.support.postgres import database_url

URL = "https://vimeo.com/76979871"


def test_topic_reads_return_the_same_events_and_use_the_index(app: MediaTasks, store_env: dict[str, str]) -> None:
    app.create_user("tia", 10)
    tasks = [app.submit("tia", URL, "subtitles").task_id for _ in range(4)]
    app.begin_attempt(tasks[1], "w")
    app.fail(tasks[1], 1, "media_not_found", "gone", retryable=False)
    failed, started = get_topic(MediaTask.Failed), get_topic(MediaTask.Started)
    every = app.recorder.select_notifications(start=None, limit=100)
    for topics in ([failed], [started, failed]):
        expected = [n.id for n in every if n.topic in topics]
        assert [n.id for n in app.recorder.select_notifications(0, 100, topics=topics)] == expected
        assert [
            n.id for n in app.recorder.select_notifications(expected[0], 100, topics=topics, inclusive_of_start=False)
        ] == expected[1:]
        assert [
            n.id for n in app.recorder.select_notifications(expected[0], 100, stop=expected[0], topics=topics)
        ] == expected[:1]
    assert app.recorder.select_notifications(0, 2, topics=[started])[-1].originator_id == tasks[1]

    schema, table = store_env["POSTGRES_SCHEMA"], app.recorder.events_table_name
    pg = {
        k: v
        for k, v in store_env.items()
        if k.startswith("POSTGRES_")
        and k in ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME")
    }
    with psycopg.connect(database_url(pg), autocommit=True) as conn:
        names = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))}
        assert topic_index_name(table) in names
        conn.execute("SET enable_seqscan = off")  # a tiny table: ask which index the planner would take
        for topics in ([failed], [started, failed]):  # each topic one range of the topic index
            statement = topic_reads_statement(schema, table, topics, inclusive_of_start=False, has_stop=False)
            explain = psycopg.sql.SQL("EXPLAIN ") + statement
            plan = "\n".join(r[0] for r in conn.execute(explain, {"start": 0, "limit": 100}))
            assert plan.count(topic_index_name(table)) == len(topics), plan
            assert app.recorder.notification_id_index_name not in plan, plan  # type: ignore[attr-defined]
