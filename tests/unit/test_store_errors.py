"""Every database error that reaches a route is 503 store_unavailable with Retry-After, never 500."""

from __future__ import annotations

import psycopg
import pytest
from eventsourcing import persistence
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg_pool import PoolTimeout

from infrastructure.api import errors
from infrastructure.api.errors import install_error_handlers
from infrastructure.postgres.store_connections import is_connection_error, read_retried


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        PoolTimeout("couldn't get a connection after 5.00 sec"),
        persistence.OperationalError("consuming input failed"),
        persistence.InterfaceError("the connection is closed"),
        persistence.ProgrammingError("relation does not exist"),
    ],
)
def test_a_database_error_answers_503_store_unavailable(error: Exception) -> None:
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/boom")
    def boom() -> None:
        raise error

    r = TestClient(api, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "store_unavailable"
    assert int(r.headers["Retry-After"]) >= 1


class UnreachablePointer:
    """A views switch whose pointer read hangs as a pool with the database away does (5 s here)."""

    datastore = type("Datastore", (), {"pool": None})()

    def current(self) -> object:
        raise AssertionError("the handler read the views pointer: on the event loop, a hang of the pool timeout")

    def known(self) -> object:
        return self


def test_the_503_handler_answers_without_reading_the_views_pointer(monkeypatch: pytest.MonkeyPatch) -> None:
    """The handler runs on the event loop: a store read there stalled every request (/readyz too) during an outage."""
    api = FastAPI()
    install_error_handlers(api)
    recorder = type("Recorder", (), {"datastore": UnreachablePointer.datastore})()
    api.state.runtime = type(
        "Runtime",
        (),
        {"settings": object(), "views": UnreachablePointer(), "app": type("App", (), {"recorder": recorder})()},
    )()

    @api.get("/boom")
    async def boom() -> None:
        raise PoolTimeout("couldn't get a connection after 5.00 sec")

    discarded: list[tuple[object, ...]] = []
    monkeypatch.setattr(errors, "discard_broken_connections_soon", lambda *stores: discarded.append(stores))
    r = TestClient(api, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 503 and r.json()["error"]["code"] == "store_unavailable"
    # the store's connections and the read model's (as last known) are still checked
    assert discarded == [(UnreachablePointer.datastore, UnreachablePointer.datastore)]


def test_other_errors_stay_500() -> None:
    api = FastAPI()
    install_error_handlers(api)

    @api.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    r = TestClient(api, raise_server_exceptions=False).get("/boom")
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"


class Pool:
    checks = 0

    def check(self) -> None:
        Pool.checks += 1


def test_a_read_on_a_broken_connection_is_retried_once_after_the_pool_is_checked() -> None:
    datastore = type("Datastore", (), {"pool": Pool()})()
    answers: list[object] = [persistence.OperationalError("server closed the connection"), "rows"]

    def read() -> object:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert read_retried(datastore, read) == "rows"
    assert Pool.checks == 1
    answers[:] = [persistence.OperationalError("down"), persistence.OperationalError("still down")]
    with pytest.raises(persistence.OperationalError, match="still down"):
        read_retried(datastore, read)  # once only
    assert is_connection_error(persistence.InterfaceError("closed"))
    assert not is_connection_error(persistence.IntegrityError("duplicate key"))
