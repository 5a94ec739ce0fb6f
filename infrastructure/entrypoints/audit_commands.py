"""`mediatasks audit …`: history, as-of, verify, rebuild, printed for people (or JSON)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from typing import Any
from uuid import UUID

from domain.errors import DomainError


def run_audit(args: argparse.Namespace) -> int:
    from infrastructure.bootstrap import bootstrap

    runtime = bootstrap()
    try:
        command = args.audit_command
        if command == "history":
            return _history(runtime.app, args.task_id, as_json=args.json)
        if command == "as-of":
            return _as_of(runtime.app, args.task_id, args.timestamp)
        if command == "verify":
            return _verify(runtime)
        if command == "rebuild":
            return _rebuild(runtime)
        return 2
    except DomainError as e:
        print(f"error: {e.message}", file=sys.stderr)
        return 1
    finally:
        runtime.close()


def _task_id(value: str) -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise SystemExit(f"error: {value!r} is not a task id") from None


def _history(app: Any, task_id: str, *, as_json: bool) -> int:
    from infrastructure.postgres.queries import notification_ids

    tid = _task_id(task_id)
    entries = app.task_history(tid)
    positions = notification_ids(app.recorder, tid)
    if as_json:
        for e in entries:
            print(json.dumps({"type": e.type, "version": e.version, "position": positions.get(e.version),
                              "timestamp": e.timestamp.isoformat(), "data": e.data}, default=str))
        return 0
    print(f"{'ver':>3} {'pos':>8}  {'timestamp (UTC)':<26} {'event':<12} details")
    for e in entries:
        print(f"{e.version:>3} {positions.get(e.version, ''):>8}  {e.timestamp.isoformat():<26} {e.type:<12} "
              f"{_summary(e.type, e.data)}")
    return 0


def _summary(kind: str, data: dict[str, Any]) -> str:
    keys = {
        "Started": ("user_id", "output_type", "url", "credits"),
        "Downloading": ("attempt", "worker_id", "progress"),
        "Processing": ("attempt", "stage", "progress"),
        "Extracted": ("attempt", "progress"),
        "Failed": ("attempt", "code", "terminal", "message"),
        "Retried": ("first_attempt", "credits"),
    }.get(kind, tuple(data))
    return " ".join(f"{k}={data[k]}" for k in keys if k in data)


def _as_of(app: Any, task_id: str, timestamp: str) -> int:
    when = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    task = app.task_at(_task_id(task_id), when)
    if task is None:
        print(f"The task did not exist yet at {when.isoformat()}.")
        return 1
    state = {"task_id": str(task.id), "as_of": when.isoformat(), "version": task.version, "status": task.status,
             "progress": task.progress, "attempt": task.attempt, "stage": task.stage, "error": task.error,
             "output_type": task.output_type, "url": task.url, "updated_at": task.modified_on.isoformat()}
    print(json.dumps(state, indent=2, default=str))
    return 0


def _verify(runtime: Any) -> int:
    from infrastructure.audit import verify

    started = time.perf_counter()
    with _progress_bar("verifying") as progress:
        report = verify(runtime.app, runtime.views, progress=progress)
    for v in report.violations:
        where = f" (events at {', '.join(map(str, v.positions))})" if v.positions else ""
        print(f"VIOLATION {v.code}: {v.message}{where}")
    seconds = time.perf_counter() - started
    print(f"{report.summary()} in {seconds:.1f} s ({report.events / seconds:,.0f} events/s)")
    return 0 if report.ok else 1


def _rebuild(runtime: Any) -> int:
    from infrastructure.audit import rebuild

    with _progress_bar("rebuilding") as progress:
        old, new, seconds = rebuild(runtime.env, runtime.app, progress=progress)
    print(f"read model rebuilt as {new} in {seconds:.1f} s; readers switched; {old} dropped")
    return 0


class _progress_bar:
    """A rich progress bar with events/s on a terminal; nothing otherwise."""

    def __init__(self, label: str) -> None:
        self.label = label
        self._progress: Any = None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn(), transient=True)
        self._progress.start()
        task = self._progress.add_task(self.label, total=None, rate="-")
        started = time.perf_counter()

        def update(done: int, total: int) -> None:
            rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f}"
            self._progress.update(task, completed=done, total=total, rate=rate)

        return update

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()
