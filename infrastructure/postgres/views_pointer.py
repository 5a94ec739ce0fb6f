"""Which read model is live: a one-row pointer table, and a reader that follows it.

`mediatasks audit rebuild` builds a new read model under a new name while the service runs, then
switches this pointer in one statement; readers and the projection runners follow it within
POINTER_CHECK_SECONDS, so reads never see a half-built model.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from psycopg.sql import SQL, Identifier

from infrastructure.postgres.store_connections import read_retried

DEFAULT_VIEWS_NAME = "TaskViews"
POINTER_TABLE = "mediatasks_read_model"
POINTER_CHECK_SECONDS = 2.0


def _table(datastore: Any) -> Any:
    return SQL("{}.{}").format(Identifier(datastore.schema), Identifier(POINTER_TABLE))


def ensure_pointer(datastore: Any) -> None:
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL(
                "CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY DEFAULT 1 CHECK (id = 1), "
                "views_name text NOT NULL, switched_at timestamptz NOT NULL DEFAULT now())"
            ).format(_table(datastore))
        )
        curs.execute(
            SQL("INSERT INTO {} (views_name) VALUES (%s) ON CONFLICT DO NOTHING").format(_table(datastore)),
            (DEFAULT_VIEWS_NAME,),
        )


def active_views_name(datastore: Any) -> str:
    def read() -> Any:
        with datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT views_name FROM {}").format(_table(datastore)))
            return curs.fetchone()

    row = read_retried(datastore, read)
    return row["views_name"] if row else DEFAULT_VIEWS_NAME


def switch_views(datastore: Any, views_name: str) -> str:
    """Point readers at another read model; returns the previous name."""
    with datastore.transaction(commit=True) as curs:
        curs.execute(SQL("SELECT views_name FROM {} FOR UPDATE").format(_table(datastore)))
        previous = curs.fetchone()["views_name"]
        curs.execute(SQL("UPDATE {} SET views_name = %s, switched_at = now()").format(_table(datastore)), (views_name,))
    return previous


class ViewsSwitch:
    """Reads go to the live read model; the pointer is re-read at most every POINTER_CHECK_SECONDS."""

    def __init__(self, datastore: Any, construct: Any) -> None:
        self._datastore = datastore
        self._construct = construct
        self._lock = threading.Lock()
        self._name = active_views_name(datastore)
        self._views = construct(self._name)
        self._checked = time.monotonic()

    @property
    def name(self) -> str:
        return self._name

    def current(self) -> Any:
        if time.monotonic() - self._checked >= POINTER_CHECK_SECONDS:
            with self._lock:
                if time.monotonic() - self._checked >= POINTER_CHECK_SECONDS:
                    name = active_views_name(self._datastore)
                    if name != self._name:
                        old, self._views, self._name = self._views, self._construct(name), name
                        old.datastore.close()
                    self._checked = time.monotonic()
        return self._views

    def known(self) -> Any:
        """The read model as last read from the pointer, without reading it (for code on an event loop)."""
        return self._views

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.current(), attribute)

    def close(self) -> None:
        self._views.datastore.close()
