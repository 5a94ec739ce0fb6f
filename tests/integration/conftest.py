"""Fixtures of the integration tier: the application and its projections on real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from application.mediatasks import MediaTasks
from infrastructure.postgres.tables import construct_views
from infrastructure.projection_runners import ProjectionRunners


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env=store_env)
    yield application
    application.close()


@pytest.fixture
def runners(store_env: dict[str, str]) -> Iterator[ProjectionRunners]:
    r = ProjectionRunners(store_env)
    yield r
    r.stop()


@pytest.fixture
def postgres_views(store_env: dict[str, str]) -> Iterator[Any]:
    """The PostgreSQL read model (its tables in the test's schema)."""
    view = construct_views(store_env)
    yield view
    view.datastore.close()
