"""The suite's services share one PostgreSQL server and its max_connections (tests/e2e/conftest.py,
SERVICE_POOL_SIZE): an idle service, its read model read once, holds few of them."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg

from tests.conftest import SERVER_KINDS
from tests.e2e.conftest import running_service
from tests.support.postgres import fresh_database

IDLE_CONNECTIONS = 20  # a serve and its projections process: 16-17 measured; 30 with pools of 4


def connections_to(pg: dict[str, str]) -> int:
    conninfo = psycopg.conninfo.make_conninfo(
        host=pg["POSTGRES_HOST"],
        port=pg["POSTGRES_PORT"],
        user=pg["POSTGRES_USER"],
        password=pg["POSTGRES_PASSWORD"] or None,
        dbname="postgres",
    )
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (pg["POSTGRES_DBNAME"],))
        return row.fetchone()[0]


def test_an_idle_service_holds_few_connections(tmp_path: Path) -> None:
    with fresh_database(SERVER_KINDS[0]) as pg, running_service(pg, tmp_path, dispatch="none") as service:
        _, key = service.new_user(5)
        with service.client(key) as client:
            assert client.get("/v1/account").status_code == 200  # the API's read-model pool opens
            assert client.get("/v1/tasks").status_code == 200
        held = []
        for _ in range(10):  # pools fill in the background: the most seen over a second
            held.append(connections_to(pg))
            time.sleep(0.1)
        assert 0 < max(held) <= IDLE_CONNECTIONS, held
