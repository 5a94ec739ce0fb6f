"""Which cursor a pooled connection opens: a traced one inside a task's trace, psycopg's own elsewhere.

`CursorsWithinTasks(traced_cursors).install()` gives every connection psycopg opens from then on
(`psycopg.Connection.connect`, which psycopg_pool calls) a cursor factory that picks, once per cursor,
`traced_cursors(connection)` (e.g. opentelemetry-instrumentation-psycopg's traced cursor, built by
infrastructure/observability/telemetry.py) when the current span is a sampled one that is not a
request's server span (a task's `event_store.append`, a phase), and psycopg's own cursor otherwise:
an HTTP request's reads, the group-commit writer's batches and the followers' polls run their
statements with no wrapper around each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from opentelemetry import trace
from opentelemetry.trace import SpanKind


@dataclass(frozen=True)
class CursorWithinTask:
    """A connection's cursor factory: the traced cursor inside a task's trace, the plain one elsewhere."""

    traced: Any
    plain: Any

    def __call__(self, connection: Any, **kwargs: Any) -> Any:
        span = trace.get_current_span()
        if span.is_recording() and getattr(span, "kind", None) is not SpanKind.SERVER:
            return self.traced(connection, **kwargs)
        return self.plain(connection, **kwargs)


class CursorsWithinTasks:
    """Installs CursorWithinTask on the connections psycopg opens; `uninstall()` stops it for new ones."""

    def __init__(self, traced_cursors: Callable[[psycopg.Connection[Any]], Any]) -> None:
        self.traced_cursors = traced_cursors
        self._connect: Any = None

    def install(self) -> None:
        connect = self._connect = psycopg.Connection.__dict__["connect"]
        traced_cursors = self.traced_cursors

        def connect_choosing_cursors(cls: Any, *args: Any, **kwargs: Any) -> Any:
            connection = connect.__func__(cls, *args, **kwargs)
            plain = connection.cursor_factory
            connection.cursor_factory = CursorWithinTask(traced_cursors(connection), plain)
            return connection

        psycopg.Connection.connect = classmethod(connect_choosing_cursors)  # type: ignore[assignment,method-assign]

    def uninstall(self) -> None:
        if self._connect is not None:
            psycopg.Connection.connect = self._connect  # type: ignore[method-assign]
            self._connect = None
