"""The TaskViews contract on the memory read model."""

from typing import Any

import pytest

from projections.memory_views import MemoryTaskViews
from tests.support.fakes import MemoryMetadataCache
from tests.support.views_contract import MetadataCacheContract, TaskViewsContract


class TestMemoryTaskViews(TaskViewsContract):
    @pytest.fixture
    def views(self) -> Any:
        return MemoryTaskViews()


class TestMemoryMetadataCache(MetadataCacheContract):
    @pytest.fixture
    def cache(self) -> Any:
        return MemoryMetadataCache()
