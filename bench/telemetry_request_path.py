"""What telemetry adds to one request in the API process, timed in process (no HTTP, no other process).

Run: .venv/bin/python bench/telemetry_request_path.py [--requests 50000] [--repeats 5]
The pieces telemetry puts on the request path, each timed against the same code without them, with the
providers `configure_telemetry` installs by default (MEDIATASKS_OTEL_EXPORTER=none): the server span and
the one duration measurement of `RequestDurations` around an ASGI app that answers at once (with its
route set on the scope, as the router does), the W3C trace context a submission injects into its task,
and the choice of cursor each pooled connection makes per cursor. Best of --repeats runs, µs per request:
the figure to set beside the API process's CPU per request in bench/telemetry_overhead.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from opentelemetry import propagate  # noqa: E402

from infrastructure.observability.http_metrics import RequestDurations  # noqa: E402
from infrastructure.observability.telemetry import UNTRACED_ROUTES, configure_telemetry  # noqa: E402
from infrastructure.postgres.statement_cursors import CursorWithinTask  # noqa: E402
from infrastructure.settings import Settings  # noqa: E402

ROUTE = SimpleNamespace(path="/v1/tasks/{task_id}")


async def answer(scope: dict[str, Any], receive: Any, send: Any) -> None:
    scope["route"] = ROUTE
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


async def answer_with_trace_context(scope: dict[str, Any], receive: Any, send: Any) -> None:
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    await answer(scope, receive, send)


def per_request_us(run: Callable[[int], None], requests: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.process_time()
        run(requests)
        best = min(best, time.process_time() - start)
    return best / requests * 1e6


def asgi_calls(app: Any) -> Callable[[int], None]:
    scope = {"type": "http", "method": "GET", "path": "/v1/tasks/abc", "headers": [(b"host", b"127.0.0.1")]}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        pass

    async def calls(n: int) -> None:
        for _ in range(n):
            await app(dict(scope), receive, send)

    return lambda n: asyncio.run(calls(n))


def cursor_choices(factory: Callable[..., Any]) -> Callable[[int], None]:
    def calls(n: int) -> None:
        for _ in range(n):
            factory(None)

    return calls


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.pop("MEDIATASKS_OTEL_EXPORTER", None)
    telemetry = configure_telemetry(Settings(telemetry=True))
    histogram = telemetry.meter_provider.get_meter(__name__).create_histogram("http.server.duration", unit="ms")
    tracer = telemetry.server_tracer()  # the one instrument_api gives RequestDurations
    excluded = frozenset(UNTRACED_ROUTES.split(","))

    def plain(_: Any, **__: Any) -> None:
        return None

    pieces = {
        "server span and duration (RequestDurations)": (
            asgi_calls(answer),
            asgi_calls(RequestDurations(answer, histogram, excluded, tracer=tracer)),
        ),
        "trace context into the task (propagate.inject)": (
            asgi_calls(RequestDurations(answer, histogram, excluded, tracer=tracer)),
            asgi_calls(RequestDurations(answer_with_trace_context, histogram, excluded, tracer=tracer)),
        ),
        "cursor choice, per cursor (CursorWithinTask)": (
            cursor_choices(plain),
            cursor_choices(CursorWithinTask(traced=plain, plain=plain)),
        ),
    }
    print(f"{args.requests:,} requests, best of {args.repeats}, CPU µs per request\n")
    print("| piece | without | with | added µs |\n|---|---:|---:|---:|")
    for name, (without, with_it) in pieces.items():
        base = per_request_us(without, args.requests, args.repeats)
        added = per_request_us(with_it, args.requests, args.repeats)
        print(f"| {name} | {base:.2f} | {added:.2f} | {added - base:+.2f} |")
    telemetry.shutdown()


if __name__ == "__main__":
    main()
