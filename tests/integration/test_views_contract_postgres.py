"""The TaskViews contract of tests/support/views_contract.py on the PostgreSQL read model."""

from collections.abc import Iterator
from typing import Any

import pytest

from application.mediatasks import MediaTasks
from infrastructure.postgres.metadata_cache import PostgresMetadataCache
from infrastructure.postgres.tables import construct_views
from tests.support.views_contract import MetadataCacheContract, TaskViewsContract


class TestPostgresTaskViews(TaskViewsContract):
    @pytest.fixture
    def views(self, store_env: dict[str, str]) -> Iterator[Any]:
        views = construct_views(store_env)
        yield views
        views.datastore.close()


class TestPostgresMetadataCache(MetadataCacheContract):
    @pytest.fixture
    def cache(self, app: MediaTasks) -> Any:
        return PostgresMetadataCache(app.recorder.datastore)

    def test_an_expired_entry_is_gone_and_purged(self, cache: Any) -> None:
        cache.put("tiktok:expired", {"title": "old"}, -1)
        assert cache.get("tiktok:expired") is None
        assert cache.purge_expired() >= 1
