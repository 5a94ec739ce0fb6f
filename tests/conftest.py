"""Fixtures shared by the test tiers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import SchemaPool, fresh_database, server_kinds

FIXTURES_DIR = Path(
    os.environ.get("MEDIATASKS_FIXTURES_DIR", Path(__file__).resolve().parents[2] / "shared" / "fixtures")
)
SERVER_KINDS = server_kinds()


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES_DIR.is_dir(), f"shared fixtures not found at {FIXTURES_DIR}"
    return FIXTURES_DIR


@pytest.fixture(scope="session", params=SERVER_KINDS)
def pg_database(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """A fresh database on each available server (the integration tier runs once per server)."""
    with fresh_database(request.param) as pg:
        yield pg


@pytest.fixture(scope="session")
def pg_database_one() -> Iterator[dict[str, str]]:
    """A fresh database on the first available server (for end-to-end tests)."""
    with fresh_database(SERVER_KINDS[0]) as pg:
        yield pg


def _store_env(pg: dict[str, str], schema: str | None = None, **overrides: str) -> dict[str, str]:
    from infrastructure.settings import Settings

    env = Settings(postgres_schema=schema or f"t_{uuid.uuid4().hex[:10]}", catch_up_seconds=0.2).event_store_env(pg)
    env.update(overrides)
    return env


@pytest.fixture(scope="session")
def schema_pool(pg_database: dict[str, str]) -> SchemaPool:
    """Empty schemas with every table, on each server (a used one is emptied for the next test)."""
    from infrastructure.postgres.tables import create_tables

    return SchemaPool(pg_database, lambda schema: create_tables(_store_env(pg_database, schema)))


@pytest.fixture
def store_env(pg_database: dict[str, str], schema_pool: SchemaPool) -> Iterator[dict[str, str]]:
    """Event-store environment in a schema of its own with every table created and empty."""
    schema = schema_pool.take()
    yield _store_env(pg_database, schema, LEASE_SECONDS="600")
    schema_pool.give_back(schema)
