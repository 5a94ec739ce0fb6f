"""Read-your-writes for every read by the writer, across processes and uvicorn workers.

Every write of a user's — a submission, a retry, a grant, and the refunds of its failures — appends
to the user's credit account, so the account's last event is the user's last write (the account is saved after the tasks of the
same transaction, so its position is the transaction's last), and its log
position is in the events table for any process to read (one primary-key lookup). A read of the
user's data from the read model first waits, bounded, until the model has processed that position.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier

from domain.credits import CreditAccount
from infrastructure.polling import poll

OWN_WRITES_WAIT_SECONDS = 3.0
T = TypeVar("T")


def last_write_position(recorder: Any, user_id: str) -> int | None:
    """The log position of the last event of the user's account (None for an unknown user)."""
    statement = SQL(
        "SELECT notification_id FROM {}.{} WHERE originator_id = %s ORDER BY originator_version DESC LIMIT 1"
    ).format(Identifier(recorder.datastore.schema), Identifier(recorder.events_table_name))
    with recorder.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
        curs.execute(statement, (CreditAccount.id_for(user_id),), prepare=True)
        row = curs.fetchone()
    return row[0] if row else None


def wait_for_own_writes(app: Any, views: Any, user_id: str, timeout: float = OWN_WRITES_WAIT_SECONDS) -> bool:
    """Wait until the read model reflects the user's last write; False if it has not within `timeout`
    (the read then answers from the model as it is: a lagging model slows reads, it does not fail them)."""
    position = last_write_position(app.recorder, user_id)
    if position is None:
        return True
    return poll(lambda: (views.max_tracking_id(app.name) or 0) >= position, timeout, max_delay=0.05)


def read_own_writes(
    app: Any,
    user_id: str,
    read: Callable[[], tuple[int | None, T]],
    timeout: float = OWN_WRITES_WAIT_SECONDS,
) -> T:
    """`read`'s answer (it reads the view's position with the rows, in one snapshot) once the view reflects
    the user's last write: `read` itself is what is polled, so the answer is the one whose position passed
    the check; after `timeout` it is the last one read (the model as it is, as `wait_for_own_writes`'s)."""
    position = last_write_position(app.recorder, user_id)
    view_position, answer = read()
    if position is None or (view_position or 0) >= position:
        return answer
    last = answer

    def reached() -> bool:
        nonlocal last
        view_position, last = read()
        return (view_position or 0) >= position

    poll(reached, timeout, max_delay=0.05)
    return last
