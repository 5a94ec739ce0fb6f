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

    if args.audit_command == "verify-export":
        return _verify_export(args)
    runtime = bootstrap()
    try:
        command = args.audit_command
        if command == "history":
            return _history(runtime.app, args.task_id, as_json=args.json)
        if command == "as-of":
            return _as_of(runtime.app, args.task_id, args.timestamp)
        if command == "verify":
            return _verify(runtime, args)
        if command == "rebuild":
            return _rebuild(runtime, args.resume)
        if command == "export":
            return _export(runtime, args)
        if command == "public-key":
            return _public_key(runtime)
        if command == "seal":
            return _seal(runtime)
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
            print(
                json.dumps(
                    {
                        "type": e.type,
                        "version": e.version,
                        "position": positions.get(e.version),
                        "timestamp": e.timestamp.isoformat(),
                        "data": e.data,
                    },
                    default=str,
                )
            )
        return 0
    print(f"{'ver':>3} {'pos':>8}  {'timestamp (UTC)':<26} {'event':<12} details")
    for e in entries:
        print(
            f"{e.version:>3} {positions.get(e.version, ''):>8}  {e.timestamp.isoformat():<26} {e.type:<12} "
            f"{_summary(e.type, e.data)}"
        )
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
    state = {
        "task_id": str(task.id),
        "as_of": when.isoformat(),
        "version": task.version,
        "status": task.status,
        "progress": task.progress,
        "attempt": task.attempt,
        "stage": task.stage,
        "error": task.error,
        "output_type": task.output_type,
        "url": task.url,
        "updated_at": task.modified_on.isoformat(),
    }
    print(json.dumps(state, indent=2, default=str))
    return 0


def _verifier(runtime: Any, public_key: str | None) -> Any:
    from infrastructure.audit.keys import Ed25519Verifier, load_public_key, signer_from_settings

    if public_key:
        return Ed25519Verifier(load_public_key(public_key))
    signer = signer_from_settings(runtime.settings)
    return signer.verifier() if signer is not None else None


def _print_report(report: Any, started: float) -> int:
    for v in report.violations:
        where = f" (events at {', '.join(map(str, v.positions))})" if v.positions else ""
        print(f"VIOLATION {v.code}: {v.message}{where}")
    if report.chain is not None and report.chain.first_tampered is not None:
        print(
            f"TAMPERED: the stored history differs from the sealed chain first at position "
            f"{report.chain.first_tampered}"
        )
    seconds = max(time.perf_counter() - started, 1e-9)
    print(f"{report.summary()} in {seconds:.1f} s ({report.events / seconds:,.0f} events/s)")
    return 0 if report.ok else 1


def _verify(runtime: Any, args: argparse.Namespace) -> int:
    from infrastructure.audit.history import verify, verify_chain

    started = time.perf_counter()
    verifier = _verifier(runtime, args.public_key)
    with progress_bar("verifying") as progress:
        if args.from_position:
            report = verify_chain(runtime.app, verifier=verifier, after=args.from_position, progress=progress)
        else:
            report = verify(runtime.app, runtime.views, verifier=verifier, progress=progress)
    if args.from_position:
        print(
            f"chain checked from the signed checkpoint at or before {args.from_position} on "
            "(the invariants need the whole history: run verify without --from)"
        )
    return _print_report(report, started)


def _export(runtime: Any, args: argparse.Namespace) -> int:
    from infrastructure.audit.export import export_writer, write_export
    from infrastructure.audit.history import REFUNDS_TRACKING_TABLE
    from infrastructure.postgres.audit_seal import PostgresSeal
    from infrastructure.postgres.queries import tracking_position

    app = runtime.app
    refunds_at = tracking_position(app.recorder, REFUNDS_TRACKING_TABLE, app.name) or 0
    with progress_bar("exporting") as progress, export_writer(args.output) as out:
        done = write_export(
            app,
            PostgresSeal(app.recorder.datastore),
            out,
            from_position=args.from_position,
            to_position=args.to_position,
            refunds_tracked_to=refunds_at,
            progress=progress,
        )
    print(
        f"exported {done['events']:,} events ({done['from']} < position <= {done['to']}) and "
        f"{done['checkpoints']} checkpoint(s)",
        file=sys.stderr,
    )
    return 0


def _verify_export(args: argparse.Namespace) -> int:
    from infrastructure.audit.export import ExportRefused, verify_export
    from infrastructure.audit.keys import Ed25519Verifier, HmacSigner, load_public_key

    if args.public_key:
        verifier: Any = Ed25519Verifier(load_public_key(args.public_key))
    elif args.hmac_key:
        verifier = HmacSigner(args.hmac_key.encode())
    else:
        print("error: give --public-key (or --hmac-key for HMAC-signed checkpoints)", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        with progress_bar("verifying export") as progress:
            report = verify_export(args.file, verifier, progress=progress)
    except ExportRefused as e:
        print(f"REFUSED: {e}")
        return 1
    if not report.invariants_checked:
        print("invariants not checked: the export does not start at the first event")
    return _print_report(report, started)


def _public_key(runtime: Any) -> int:
    from infrastructure.audit.keys import Ed25519Signer, signer_from_settings

    signer = signer_from_settings(runtime.settings)
    if not isinstance(signer, Ed25519Signer):
        print("error: checkpoints are not signed with an Ed25519 key here", file=sys.stderr)
        return 1
    print(signer.public_pem(), end="")
    return 0


def _seal(runtime: Any) -> int:
    from infrastructure.bootstrap import sealing_follower

    follower = sealing_follower(runtime)
    if follower is None:
        print("error: sealing is off or there is no signing key (docs/audit.md)", file=sys.stderr)
        return 1
    started = time.perf_counter()
    with progress_bar("sealing") as progress:
        follower.catch_up(progress)
        follower.checkpoint_seconds = 0  # and a checkpoint at the head, so the whole log is signed
        follower.catch_up()
    print(f"sealed to {follower.position()} in {time.perf_counter() - started:.1f} s")
    return 0


def _rebuild(runtime: Any, resume: str | None) -> int:
    from infrastructure.audit.history import RebuildInterrupted, rebuild

    try:
        with progress_bar("rebuilding") as progress:
            old, new, seconds = rebuild(runtime.env, runtime.app, progress=progress, resume=resume)
    except RebuildInterrupted as e:
        print(f"interrupted: {e}; go on with `mediatasks audit rebuild --resume {e.name}`", file=sys.stderr)
        return 130
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"read model rebuilt as {new} in {seconds:.1f} s; readers switched; {old} dropped")
    return 0


class progress_bar:
    """A rich progress bar with events/s and ETA on a terminal; a plain line every few seconds otherwise."""

    def __init__(self, label: str, *, plain_every_seconds: float = 5.0) -> None:
        self.label = label
        self.plain_every_seconds = plain_every_seconds
        self._progress: Any = None

    def __enter__(self) -> Any:
        started = time.perf_counter()
        if not sys.stderr.isatty():
            last = [started]

            def line(done: int, total: int) -> None:
                now = time.perf_counter()
                if now - last[0] < self.plain_every_seconds and done < total:
                    return
                last[0] = now
                rate = done / max(now - started, 1e-9)
                eta = (total - done) / rate if rate else 0.0
                share = f" ({100 * done / total:.1f} %)" if total else ""
                print(
                    f"{self.label}: position {done:,} of {total:,}{share}, {rate:,.0f} events/s, ETA {eta:,.0f} s",
                    file=sys.stderr,
                    flush=True,
                )

            return line
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(self.label),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]} events/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            transient=True,
        )
        self._progress.start()
        task = self._progress.add_task(self.label, total=None, rate="-")

        def update(done: int, total: int) -> None:
            rate = f"{done / max(time.perf_counter() - started, 1e-9):,.0f}"
            self._progress.update(task, completed=done, total=total, rate=rate)

        return update

    def __exit__(self, *_: object) -> None:
        if self._progress is not None:
            self._progress.stop()
