"""The `mediatasks` command."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

from infrastructure.observability.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mediatasks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="HTTP API + a projections process beside it (embedded PostgreSQL unless configured)"
    )
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    serve.add_argument(
        "--no-projections", action="store_true", help="start no projections process (run `mediatasks projections`)"
    )
    serve.add_argument("--no-dispatch", action="store_true", help="do not run attempts in this process")

    projections = sub.add_parser(
        "projections",
        help="run the read model, the refund issuer and the other log followers until stopped "
        "(serve starts one itself unless --no-projections)",
    )
    projections.add_argument("--dispatch", action="store_true", help="also run attempts (the inline dispatcher)")
    projections.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # serve's: stop with it
    projections.add_argument("--restarts", type=int, default=None, help=argparse.SUPPRESS)  # shown by /readyz

    worker = sub.add_parser("worker", help="serve only POST /v1/deliveries/qstash: a stateless attempt runner")
    worker.add_argument("--host", default=None)
    worker.add_argument("--port", type=int, default=None)

    users = sub.add_parser("users", help="manage users").add_subparsers(dest="users_command", required=True)
    create = users.add_parser("create", help="create a user and print its API key")
    create.add_argument("user_id")
    create.add_argument("--credits", type=int, default=0)

    audit = sub.add_parser("audit", help="answer questions from the event history alone").add_subparsers(
        dest="audit_command", required=True
    )
    history = audit.add_parser("history", help="every event of a task, in order")
    history.add_argument("task_id")
    history.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    as_of = audit.add_parser("as-of", help="a task's state at a past moment")
    as_of.add_argument("task_id")
    as_of.add_argument("timestamp", help="ISO 8601, e.g. 2026-11-28T12:00:00Z")
    verify = audit.add_parser(
        "verify", help="replay every event and check the invariants, the sealed chain and the read model"
    )
    verify.add_argument(
        "--from",
        dest="from_position",
        type=int,
        default=0,
        help="resume: check the sealed chain only, from the checkpoint at or before POS",
    )
    verify.add_argument(
        "--public-key",
        default=None,
        help="check signatures with this Ed25519 public key "
        "(PEM, a PEM file, or hex/base64) instead of the configured key",
    )
    rebuild = audit.add_parser("rebuild", help="rebuild the read model under a new name and switch to it")
    rebuild.add_argument(
        "--resume",
        metavar="NAME",
        default=None,
        help="go on with the interrupted rebuild NAME (TaskViews_…) from its last commit",
    )
    export = audit.add_parser(
        "export",
        help="write the events and the checkpoints covering them as NDJSON (zstd-compressed if FILE ends .zst)",
    )
    export.add_argument(
        "--from", dest="from_position", type=int, default=0, help="from the checkpoint at or before POS"
    )
    export.add_argument("--to", dest="to_position", type=int, default=None, help="to the checkpoint at or after POS")
    export.add_argument("--output", "-o", default="-", help="FILE (default: standard output)")
    verify_export = audit.add_parser("verify-export", help="check an export alone, with no database")
    verify_export.add_argument("file")
    verify_export.add_argument("--public-key", default=None, help="Ed25519 public key (PEM, a PEM file, or hex/base64)")
    verify_export.add_argument("--hmac-key", default=None, help="the HMAC-SHA256 secret, for HMAC-signed checkpoints")
    audit.add_parser("public-key", help="print the public key that verifies this service's checkpoints")
    audit.add_parser(
        "seal",
        help="seal the log up to its head now, ending with a checkpoint (the sealing follower's catch-up; "
        "interrupted, it resumes from where it stopped)",
    )

    from infrastructure.client.commands import CLIENT_COMMANDS, add_client_commands, run_client

    add_client_commands(sub)
    args = parser.parse_args(argv)
    if args.command in CLIENT_COMMANDS:
        return run_client(args)
    configure_logging(stream=sys.stdout if args.command in ("serve", "projections", "worker") else sys.stderr)
    if args.command == "serve":
        return _serve(args)
    if args.command == "projections":
        return _projections(args)
    if args.command == "worker":
        return _worker(args)
    if args.command == "users":
        return _users_create(args)
    if args.command == "audit":
        from infrastructure.entrypoints.audit_commands import run_audit

        return run_audit(args)
    return 2


def _serve(args: argparse.Namespace) -> int:
    """The API in this process (or `--workers` uvicorn workers) and the projections process beside it."""
    import uvicorn

    from infrastructure.settings import Settings

    settings = Settings()
    host = args.host or settings.host
    port = args.port or settings.port
    # uvicorn re-raises SIGTERM/SIGINT after its graceful shutdown: turn that into a clean exit
    # so the projections process stops and the embedded PostgreSQL is stopped by this process.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    _announce(settings, host, port)
    settings = _shared_with_children(settings, projections=not args.no_projections)
    projections = None
    if not args.no_projections:
        from infrastructure.projections_process import ProjectionsProcess

        dispatch = args.workers > 1 and not args.no_dispatch  # no uvicorn worker runs the dispatcher
        projections = ProjectionsProcess(
            ["--dispatch"] if dispatch else [],
            os.environ,
            backoff_base_seconds=settings.follower_backoff_base_seconds,
            backoff_cap_seconds=settings.follower_backoff_cap_seconds,
        )
        projections.start()
    try:
        if args.workers > 1:
            uvicorn.run(
                "infrastructure.entrypoints.asgi:create_worker_api",
                factory=True,
                host=host,
                port=port,
                workers=args.workers,
                log_level="warning",
                **http_options(settings),
            )
            return 0
        from infrastructure.entrypoints.asgi import ServiceProcess

        service = ServiceProcess(settings, run_dispatcher=not args.no_dispatch)
        try:
            uvicorn.run(service.api, host=host, port=port, log_level="warning", **http_options(settings))
        finally:
            service.close()
    finally:
        if projections is not None:
            projections.stop()
    return 0


def _shared_with_children(settings: Any, *, projections: bool) -> Any:
    """What every process of this `serve` reads from its environment: the embedded server's URL (it
    is started here, once, and stopped by this process last: infrastructure/postgres/embedded_server.py)
    and where the projections process answers /readyz."""
    from infrastructure.postgres.embedded_server import STARTED_BY_PARENT, start_embedded_postgres
    from infrastructure.projections_process import free_loopback_port

    update: dict[str, Any] = {}
    if settings.database_url is None:
        os.environ[STARTED_BY_PARENT] = start_embedded_postgres(settings.data_dir)
    if projections and settings.projections_port is None:
        update["projections_port"] = free_loopback_port()
        os.environ["MEDIATASKS_PROJECTIONS_PORT"] = str(update["projections_port"])
    return settings.model_copy(update=update)


def _announce(settings: Any, host: str, port: int) -> None:
    """The first thing a newcomer reads: where the service listens, where its data lives, how to begin."""
    import logging

    database = "embedded PostgreSQL in " + str(settings.data_dir.resolve() / "pg")
    if settings.database_url is not None:
        database = "MEDIATASKS_DATABASE_URL"
    logging.getLogger("mediatasks").info(
        "mediatasks is serving",
        extra={
            "url": f"http://{host}:{port}",
            "data_dir": str(settings.data_dir.resolve()),
            "database": database,
            "create_a_user": "mediatasks users create NAME --credits 10",
        },
    )


def http_options(settings: Any) -> dict[str, Any]:
    """uvicorn's HTTP protocol with this service's header limits and read timeouts (docs/security.md)."""
    from infrastructure.api.connection_limits import connection_limits, guarded_protocol

    return {"http": guarded_protocol(connection_limits(settings)), "server_header": False}


def _exit_cleanly(*_: Any) -> None:
    raise SystemExit(0)


def _projections(args: argparse.Namespace) -> int:
    from infrastructure.bootstrap import (
        bootstrap,
        start_inline_dispatcher,
        start_qstash_publisher,
        start_sealing_follower,
    )
    from infrastructure.collector import settle_for_serving
    from infrastructure.projection_runners import ProjectionRunners
    from infrastructure.settings import Settings

    # Before any thread starts (Linux keeps a priority per thread; new threads inherit their creator's).
    settings = Settings()
    os.nice(settings.projections_nice)
    runtime = bootstrap(settings)
    runners = ProjectionRunners(runtime.env, supervisor=runtime.supervisor)
    runtime.telemetry.observe_projection_lag(runtime, runners)
    publisher = start_qstash_publisher(runtime) if runtime.settings.dispatch == "qstash" else None
    if args.dispatch and runtime.settings.dispatch == "inline":
        from infrastructure.entrypoints.asgi import worker_id

        start_inline_dispatcher(runtime, worker_id=worker_id())
    start_sealing_follower(runtime)
    from infrastructure.webhooks.wiring import start_webhook_delivery

    start_webhook_delivery(runtime)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.parent_pid is not None:
        from infrastructure.projections_process import exit_with_parent

        exit_with_parent(args.parent_pid, stop)
    status = None
    if runtime.settings.projections_port:  # /readyz, /healthz and /metrics of this process (its followers)
        status = _serve_status(runtime, runners, publisher, args.restarts)
    settle_for_serving()  # start-up's objects out of the collector's generations (as in the API's process)
    try:
        stop.wait()
    finally:
        if status is not None:
            status.should_exit = True
        runners.stop()
        runtime.close()
    return 0


def _serve_status(runtime: Any, runners: Any, publisher: Any, restarts: int | None) -> Any:
    """/healthz, /readyz and /metrics of a `mediatasks projections` process, served from a thread."""
    import uvicorn

    from infrastructure.api.app import create_status_api

    server = uvicorn.Server(
        uvicorn.Config(
            create_status_api(runtime, runners, publisher=publisher, restarts=restarts),
            host=runtime.settings.host,
            port=runtime.settings.projections_port,
            log_level="warning",
        )
    )
    threading.Thread(target=server.run, name="status-api", daemon=True).start()
    return server


def _worker(args: argparse.Namespace) -> int:
    """The delivery endpoint alone: no projections, no dispatcher, no publisher; start it N times."""
    import uvicorn

    from infrastructure.api.app import create_delivery_api
    from infrastructure.bootstrap import bootstrap, build_qstash_deliveries
    from infrastructure.entrypoints.asgi import worker_id
    from infrastructure.settings import Settings

    settings = Settings()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit_cleanly)
    runtime = bootstrap(settings)
    try:
        api = create_delivery_api(runtime, build_qstash_deliveries(runtime, worker_id()))
        uvicorn.run(
            api,
            host=args.host or settings.host,
            port=args.port or settings.port,
            log_level="warning",
            **http_options(settings),
        )
    finally:
        runtime.close()
    return 0


def _users_create(args: argparse.Namespace) -> int:
    from domain.errors import DomainError
    from infrastructure.bootstrap import bootstrap

    runtime = bootstrap()
    try:
        user = runtime.app.create_user(args.user_id, args.credits)
    except DomainError as e:
        print(json.dumps({"error": {"code": e.code, "message": e.message}}), file=sys.stderr)
        return 1
    finally:
        runtime.close()
    out: dict[str, Any] = {"user_id": user.user_id, "api_key": user.api_key, "balance": user.balance}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
