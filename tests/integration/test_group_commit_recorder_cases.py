"""eventsourcing's own recorder test cases, run against the group-commit recorders on each server.

The library's PostgreSQL test classes subclass these same cases (`eventsourcing.tests.persistence`)
with a plain recorder; here `create_recorder` returns ours. The ordering test (notification ids of
two concurrent inserts never interleave) runs 20 times, with stacks too big to share a transaction
(the library's 1000 events) and small enough to share one (100 events).
"""

from __future__ import annotations

import unittest
import uuid
from typing import Any, ClassVar
from uuid import uuid4

import psycopg
from eventsourcing.persistence import ApplicationRecorder, IntegrityError, ProcessRecorder, StoredEvent
from eventsourcing.tests import persistence as library_cases
from eventsourcing.utils import Environment

from infrastructure.postgres.event_store import (
    GroupCommitApplicationRecorder,
    GroupCommitProcessRecorder,
    MediaTasksPostgresFactory,
)
from infrastructure.settings import Settings
from tests.support.postgres import fresh_database, server_kinds

ORDERING_LOOPS = 20


class GroupCommitStore(unittest.TestCase):
    """A fresh database per class on one server, a fresh schema per test, recorders with GROUP_COMMIT=on."""

    server_kind: ClassVar[str] = "external"
    _database: ClassVar[Any]
    pg: ClassVar[dict[str, str]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls._database = fresh_database(cls.server_kind)
        cls.pg = cls._database.__enter__()

    @classmethod
    def tearDownClass(cls) -> None:
        cls._database.__exit__(None, None, None)
        super().tearDownClass()

    def setUp(self) -> None:
        super().setUp()
        self.schema = f"gc_{uuid.uuid4().hex[:10]}"
        with self.connect() as conn:
            conn.execute(f'CREATE SCHEMA "{self.schema}"')
        self.factories: list[MediaTasksPostgresFactory] = []

    def tearDown(self) -> None:
        for factory in self.factories:
            factory.close()
        with self.connect() as conn:
            conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        super().tearDown()

    def connect(self) -> psycopg.Connection[Any]:
        pg = self.pg
        return psycopg.connect(
            host=pg["POSTGRES_HOST"],
            port=pg["POSTGRES_PORT"],
            user=pg["POSTGRES_USER"],
            password=pg["POSTGRES_PASSWORD"] or None,
            dbname=pg["POSTGRES_DBNAME"],
            autocommit=True,
        )

    def factory(self) -> MediaTasksPostgresFactory:
        """One factory (one connection pool) per test, however often the case asks for a recorder."""
        if not self.factories:
            env = Settings(
                postgres_schema=self.schema, group_commit="on", postgres_pool_size=2, postgres_max_overflow=8
            ).event_store_env(self.pg)
            env["CREATE_TABLE"] = "yes"
            self.factories.append(MediaTasksPostgresFactory(Environment("", env)))
        return self.factories[0]


class ApplicationRecorderCases(GroupCommitStore, library_cases.ApplicationRecorderTestCase[ApplicationRecorder]):
    def create_recorder(self) -> ApplicationRecorder:
        recorder = self.factory().application_recorder()
        assert isinstance(recorder, GroupCommitApplicationRecorder)
        return recorder

    def test_a_conflicting_insert_writes_none_of_its_events(self) -> None:
        recorder = self.create_recorder()
        existing = uuid4()
        recorder.insert_events([StoredEvent(existing, 1, "topic", b"x")])
        with self.assertRaises(IntegrityError):
            recorder.insert_events(
                [StoredEvent(existing, 1, "topic", b"again"), StoredEvent(existing, 2, "topic", b"new")]
            )
        self.assertEqual([e.originator_version for e in recorder.select_events(existing)], [1])

    def test_inserts_after_every_connection_was_closed(self) -> None:
        recorder = self.create_recorder()
        recorder.insert_events([StoredEvent(uuid4(), 1, "topic", b"x")])
        with self.connect() as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ids = recorder.insert_events([StoredEvent(uuid4(), 1, "topic", b"y")])
        self.assertEqual(len(ids or []), 1)


class ProcessRecorderCases(GroupCommitStore, library_cases.ProcessRecorderTestCase):
    def create_recorder(self) -> ProcessRecorder:
        recorder = self.factory().process_recorder()
        assert isinstance(recorder, GroupCommitProcessRecorder)
        return recorder


class NonInterleavingCases(GroupCommitStore, library_cases.NonInterleavingNotificationIDsBaseCase):
    """Two stacks of 1000 events: each larger than a batch's 500, so each commits alone."""

    def create_recorder(self) -> ApplicationRecorder:
        return self.factory().application_recorder()

    def test(self) -> None:
        for _ in range(ORDERING_LOOPS):
            super().test()


class NonInterleavingInOneTransactionCases(NonInterleavingCases):
    """Two stacks of 100 events: they can share one transaction and must still not interleave."""

    insert_num = 100


def _per_server(cls: type[GroupCommitStore], kind: str) -> type[GroupCommitStore]:
    return type(f"{cls.__name__}{kind.capitalize()}", (cls,), {"server_kind": kind, "__module__": __name__})


for _kind in server_kinds():
    for _case in (
        ApplicationRecorderCases,
        ProcessRecorderCases,
        NonInterleavingCases,
        NonInterleavingInOneTransactionCases,
    ):
        _cls = _per_server(_case, _kind)
        globals()[_cls.__name__] = _cls

del ApplicationRecorderCases, ProcessRecorderCases, NonInterleavingCases, NonInterleavingInOneTransactionCases
del _kind, _case, _cls
