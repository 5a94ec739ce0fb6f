"""The active-task cap's count reads one user's open tasks through their partial index, not every user's."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.sql import SQL

from application.mediatasks import MediaTasks
from infrastructure.postgres.user_limits import active_task_count, active_task_count_statement
from infrastructure.projection_runners import ProjectionRunners
from tests.support.postgres import database_url

URL = "https://vimeo.com/76979871"
PG_KEYS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DBNAME")


def test_the_count_is_each_users_and_takes_the_index_of_open_tasks_by_user(
    app: MediaTasks, runners: ProjectionRunners, postgres_views: Any, store_env: dict[str, str]
) -> None:
    app.create_user("tia", 10)
    app.create_user("bob", 10)
    tia = [app.submit("tia", URL, "subtitles").task_id for _ in range(3)]
    [app.submit("bob", URL, "subtitles") for _ in range(2)]
    app.begin_attempt(tia[0], "w")
    app.fail(tia[0], 1, "media_not_found", "gone", retryable=False)  # no longer open
    runners.wait_for(app.recorder.max_notification_id(), timeout=15)
    assert active_task_count(postgres_views, "tia") == 2
    assert active_task_count(postgres_views, "bob") == 2
    assert active_task_count(postgres_views, "nobody") == 0

    index = f"{postgres_views.prefix}_tasks_open_by_user"
    with psycopg.connect(database_url({k: store_env[k] for k in PG_KEYS if k in store_env}), autocommit=True) as conn:
        conn.execute(SQL("SET search_path TO {}").format(psycopg.sql.Identifier(store_env["POSTGRES_SCHEMA"])))
        conn.execute("SET enable_seqscan = off")  # a tiny table: ask which index the planner would take
        statement = active_task_count_statement(postgres_views).as_string(conn).replace("%s", "$1")
        conn.execute(f"PREPARE active_count(text) AS {statement}")
        for mode in ("force_custom_plan", "force_generic_plan"):
            conn.execute(SQL("SET plan_cache_mode = {}").format(SQL(mode)))
            plan = "\n".join(r[0] for r in conn.execute("EXPLAIN EXECUTE active_count('tia')"))
            assert index in plan, plan
            assert f"{postgres_views.prefix}_tasks_open " not in plan + " ", plan
