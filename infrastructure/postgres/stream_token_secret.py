"""The stream-token secret of a deployment on an external database: a one-row table."""

from __future__ import annotations

import secrets
from typing import Any

from psycopg.sql import SQL, Identifier

SECRET_TABLE = "stream_token_secret"


def _table(datastore: Any) -> Any:
    return SQL("{}.{}").format(Identifier(datastore.schema), Identifier(SECRET_TABLE))


def create_table(datastore: Any) -> None:
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL("CREATE TABLE IF NOT EXISTS {} (id int PRIMARY KEY CHECK (id = 1), secret text NOT NULL)").format(
                _table(datastore)
            )
        )


def secret_in_database(datastore: Any) -> str:
    """The deployment's secret in its database; the first process to ask generates it."""
    table = _table(datastore)
    with datastore.transaction(commit=True) as curs:
        curs.execute(
            SQL("INSERT INTO {} (id, secret) VALUES (1, %s) ON CONFLICT (id) DO NOTHING").format(table),
            (secrets.token_urlsafe(32),),
        )
        curs.execute(SQL("SELECT secret FROM {} WHERE id = 1").format(table))
        row = curs.fetchone()
    return row["secret"] if isinstance(row, dict) else row[0]
