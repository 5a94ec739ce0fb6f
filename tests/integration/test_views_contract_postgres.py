"""The TaskViews contract of tests/support/views_contract.py on the PostgreSQL read model."""

from typing import Any

import pytest

from application.mediatasks import MediaTasks
from infrastructure.postgres.metadata_cache import PostgresMetadataCache
from tests.support.views_contract import MetadataCacheContract, TaskViewsContract


class TestPostgresTaskViews(TaskViewsContract):
    @pytest.fixture
    def views(self, postgres_views: Any) -> Any:
        return postgres_views


class TestPostgresMetadataCache(MetadataCacheContract):
    @pytest.fixture
    def cache(self, app: MediaTasks) -> Any:
        return PostgresMetadataCache(app.recorder.datastore)

    def test_an_expired_entry_is_gone_and_purged(self, cache: Any) -> None:
        cache.put("tiktok:expired", {"title": "old"}, -1)
        assert cache.get("tiktok:expired") is None
        assert cache.purge_expired() >= 1
