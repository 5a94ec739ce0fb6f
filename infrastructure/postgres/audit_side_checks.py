"""The parts of `verify` that need none of the replay's state, run in a second process beside it.

The chain check (every event hashed against its link, the signed checkpoints) and the read of the live
read model take about half of a verify's time. A child process imports the replay's own snapshot
(`pg_export_snapshot`), so it reads exactly the rows the replay reads, runs the same `ChainCheck` on
them (its signatures already checked by the parent) and returns its report, its violations in order,
and the live read model as `read_snapshot` gives it, serialised by orjson (sorted keys).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.sql import SQL, Identifier, Literal
from psycopg.types.json import set_json_loads

from application.audit_chain import ChainCheck, merge_by_position
from infrastructure.postgres.audit_seal import ExportedSnapshot, open_history_cursors, paged
from infrastructure.postgres.task_views import read_snapshot, view_tables


@dataclass
class SideResult:
    chain: ChainCheck  # finished: its report is final
    violations: list[tuple[str, str, int]]  # (code, message, position), in the order the check named them
    live: bytes  # the live read model's snapshot: orjson bytes, or pickle where orjson refuses a value


class SideChecks:
    """`start` the chain check and the live read model's read; `result()` before the snapshot closes.

    The child is `python -m infrastructure.postgres.audit_side_checks` (arguments and result pickled
    through its stdin and stdout), so no caller needs multiprocessing's main-module guard."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self._process = process

    @classmethod
    def start(cls, snapshot: ExportedSnapshot, chain: ChainCheck, views: Any) -> SideChecks:
        violate, chain.violate = chain.violate, None  # a bound method of the parent's auditor does not travel
        try:
            state = pickle.dumps(chain)
        finally:
            chain.violate = violate
        exported = (
            snapshot.conninfo,
            snapshot.snapshot_id,
            snapshot.events_table,
            snapshot.links_table,
            snapshot.after,
            snapshot.head,
            snapshot.stop,
        )
        arguments = pickle.dumps((exported, state, views.datastore.schema, views.prefix))
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        process = subprocess.Popen(
            [sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert process.stdin is not None
        with process.stdin:
            process.stdin.write(arguments)
        return cls(process)

    def result(self) -> SideResult:
        assert self._process.stdout is not None
        with self._process.stdout:
            output = self._process.stdout.read()
        if self._process.wait() != 0:
            raise RuntimeError(f"the chain check and read-model read failed (exit {self._process.returncode})")
        return pickle.loads(output)


def tracked_in_snapshot(snapshot: ExportedSnapshot, views: Any, application_name: str) -> int:
    """The read model's tracking position in the exported snapshot (0 before its first event)."""
    table = SQL("{}.{}").format(Identifier(views.datastore.schema), Identifier(views.tracking_table_name))
    with snapshot.connection.cursor() as curs:
        curs.execute(
            SQL("SELECT max(notification_id) AS position FROM {} WHERE application_name = %s").format(table),
            (application_name,),
        )
        row = curs.fetchone()
    return (row["position"] if row else None) or 0


def _side_checks(exported: tuple[Any, ...], state: bytes, views_schema: str, views_prefix: str) -> SideResult:
    conninfo, snapshot_id, events_table, links_table, after, head, stop = exported
    chain: ChainCheck = pickle.loads(state)
    violations: list[tuple[str, str, int]] = []
    chain.violate = lambda code, message, *positions: violations.append((code, message, *positions))
    with psycopg.connect(conninfo) as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        set_json_loads(_json_loads, context=conn)
        conn.execute(SQL("SET TRANSACTION SNAPSHOT {}").format(Literal(snapshot_id)))
        events, links = open_history_cursors(
            conn,
            SQL("{}.{}").format(*map(Identifier, events_table)),
            SQL("{}.{}").format(*map(Identifier, links_table)),
            after,
            head,
            stop,
        )
        check = chain.check
        for position, row, link in merge_by_position(paged(events), paged(links)):
            check(position, row, link)
        events.close()
        links.close()
        chain.finish()
        with conn.cursor(row_factory=dict_row) as curs:
            live = read_snapshot(
                lambda statement: curs.execute(statement).fetchall(), view_tables(views_schema, views_prefix)
            )
    chain.violate = None
    try:
        encoded = orjson.dumps(live, option=orjson.OPT_SORT_KEYS)  # as `plain_json` writes it
    except TypeError:  # ints past 64 bits
        encoded = pickle.dumps(live)
    return SideResult(chain, violations, encoded)


def load_live(encoded: bytes) -> dict[str, Any]:
    """The live snapshot `SideResult.live` holds."""
    return pickle.loads(encoded) if encoded[:1] == b"\x80" else orjson.loads(encoded)


def _json_loads(data: bytes | str) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:  # what orjson refuses (numbers past 64 bits): the json module's reading
        import json

        return json.loads(data)


if __name__ == "__main__":  # the child: its classes pickled under the module's name, not __main__'s
    from infrastructure.postgres import audit_side_checks

    result = audit_side_checks._side_checks(*pickle.loads(sys.stdin.buffer.read()))
    sys.stdout.buffer.write(pickle.dumps(result))
