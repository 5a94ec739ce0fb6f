"""The use-case suite of tests/unit/test_use_cases.py, on PostgreSQL (the same tests, the real store)."""

from collections.abc import Iterator

import pytest

from application.mediatasks import MediaTasks
from tests.support.use_cases import MediaTasksUseCases


class TestUseCasesOnPostgres(MediaTasksUseCases):
    @pytest.fixture
    def app(self, store_env: dict[str, str]) -> Iterator[MediaTasks]:
        app = MediaTasks(env=store_env)
        yield app
        app.close()
