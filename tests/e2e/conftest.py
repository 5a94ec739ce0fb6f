"""End-to-end fixtures: the real server process on a free loopback port, real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.fake_platform import FakePlatform
from tests.support.postgres import database_url, drop_schema
from tests.support.service_process import ServiceProcess

ADMIN_TOKEN = "test-admin-token-" + uuid.uuid4().hex
# Connections each pool of a service started here keeps open (the default is 4). Both xdist workers'
# services, and the integration tests beside them, share the server at 127.0.0.1:5432 and its 100
# max_connections: with 4, a serve and its projections process held 30 connections once its read model
# was read (16-17 with 1: tests/e2e/test_connection_budget.py), test_stream_token.py's module service
# beside its own services 54, and the suite reached 100. A process that then
# opens a pool (the API's read-model pool opens on its first read) waits for a connection the server
# refuses ("too many clients already") and answers 503 store_unavailable after postgres_wait_seconds.
SERVICE_POOL_SIZE = "1"


@dataclass
class RunningService:
    url: str
    process: ServiceProcess
    schema: str

    @property
    def admin(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def client(self, api_key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def new_user(self, credits: int = 10) -> tuple[str, str]:
        user_id = "u" + uuid.uuid4().hex[:12]
        r = httpx.post(
            self.url + "/v1/admin/users", json={"user_id": user_id, "credits": credits}, headers=self.admin, timeout=30
        )
        assert r.status_code == 201, r.text
        return user_id, r.json()["api_key"]


def start_service(
    pg: dict[str, str], log_dir: Path, *args: str, command: str = "serve", **settings: str
) -> tuple[ServiceProcess, str]:
    """`mediatasks <command>` (serve or worker) in a fresh schema, unless `postgres_schema` names one.

    Its pools keep SERVICE_POOL_SIZE connections open each (they still grow under load): the suite's
    processes share one server's max_connections."""
    schema = settings.get("postgres_schema") or f"e2e_{uuid.uuid4().hex[:10]}"
    env = {
        "MEDIATASKS_DATABASE_URL": database_url(pg),
        "MEDIATASKS_POSTGRES_SCHEMA": schema,
        "MEDIATASKS_POSTGRES_POOL_SIZE": SERVICE_POOL_SIZE,
        "MEDIATASKS_ADMIN_TOKEN": ADMIN_TOKEN,
        "MEDIATASKS_CATCH_UP_SECONDS": "0.5",
        "MEDIATASKS_DATA_DIR": str(log_dir / "data"),
        **{f"MEDIATASKS_{k.upper()}": v for k, v in settings.items()},
    }
    log_path = log_dir / f"{schema}-{command}-{uuid.uuid4().hex[:6]}.log"
    process = ServiceProcess(*args, env=env, cwd=log_dir, log_path=log_path, command=command)
    process.wait_ready()
    return process, schema


@contextmanager
def running_service(pg: dict[str, str], log_dir: Path, *args: str, **settings: str) -> Iterator[RunningService]:
    """A started service in a fresh schema; stopped and its schema dropped afterwards."""
    process, schema = start_service(pg, log_dir, *args, **settings)
    try:
        yield RunningService(process.url, process, schema)
    finally:
        process.stop()
        drop_schema(pg, schema)


def platform_settings(platform: FakePlatform, **settings: str) -> dict[str, str]:
    """Settings that point the service's HTTP provider at the fake platform (and let it reach loopback)."""
    return {
        "provider": "http",
        "provider_url": platform.provider_url,
        "provider_key": platform.api_key,
        "provider_host": platform.api_host,
        "url_allow_cidrs": "127.0.0.1/32",
        **settings,
    }


@pytest.fixture(scope="module")
def platform() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield fake


@pytest.fixture(scope="module")
def service(pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    # No dispatcher: these tests play the worker themselves (and nothing may reach a real platform).
    with running_service(
        pg_database_one, tmp_path_factory.mktemp("service"), sse_ping_seconds="1", dispatch="none"
    ) as running:
        yield running
