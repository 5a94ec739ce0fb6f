"""Connections that survive a database restart: broken pooled connections are found and dropped.

After PostgreSQL restarts (or a proxy cuts every socket) each idle connection in a psycopg pool is
dead, but the pool only learns that when one is used and fails. `discard_broken_connections`
asks psycopg_pool to test every idle connection now (`ConnectionPool.check()`: the broken ones are
closed and replaced), at most once per CHECK_INTERVAL_SECONDS per pool, and `read_retried` runs a
read, and once more on a fresh connection if the first failed on a broken one. Reads only: a write
is retried only where its outcome is known (see application/mediatasks.py `_charge_and_save`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from eventsourcing import persistence

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHECK_INTERVAL_SECONDS = 0.5
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.OperationalError,
    psycopg.InterfaceError,
    persistence.OperationalError,
    persistence.InterfaceError,
)
STORE_ERRORS: tuple[type[BaseException], ...] = (psycopg.Error, persistence.PersistenceError)

_checked_at: dict[int, float] = {}
_lock = threading.Lock()


def is_connection_error(error: BaseException) -> bool:
    """Whether the error says the connection (or the server) failed, not the statement."""
    return isinstance(error, CONNECTION_ERRORS) or isinstance(error.__cause__, CONNECTION_ERRORS)


def discard_broken_connections(datastore: Any) -> None:
    """Test the pool's idle connections and replace the broken ones (rate-limited per pool)."""
    pool = getattr(datastore, "pool", None)
    if pool is None:
        return
    now = time.monotonic()
    with _lock:
        if now - _checked_at.get(id(pool), 0.0) < CHECK_INTERVAL_SECONDS:
            return
        _checked_at[id(pool)] = now
    try:
        pool.check()
    except Exception:  # noqa: BLE001 - a closed pool, or the server still down: the next use tells
        logger.debug("could not check the pool's connections", exc_info=True)


def discard_broken_connections_soon(*datastores: Any) -> None:
    """discard_broken_connections for each datastore, in a thread of its own (for callers that answer now)."""

    def check() -> None:
        for datastore in datastores:
            discard_broken_connections(datastore)

    threading.Thread(target=check, name="pool-check", daemon=True).start()


def read_retried(datastore: Any, read: Callable[[], T]) -> T:
    """Run a read; if it failed on a broken connection, drop the broken ones and run it once more."""
    try:
        return read()
    except CONNECTION_ERRORS as error:
        logger.info("a read failed on a broken connection; retrying once", extra={"error": str(error)[:200]})
        discard_broken_connections(datastore)
        return read()
