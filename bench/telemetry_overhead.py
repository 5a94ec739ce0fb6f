"""Telemetry on against off, alternated within one run: POST /v1/tasks (1 and 64 users), GET /v1/tasks/{id}, GET /v1/account.

Run: .venv/bin/python bench/telemetry_overhead.py [--rounds 5] [--seconds 4] [--connections 32]
[--modes off,on] [--rows post-1,post-64,get-task,get-account] [--ratio 0.1] [--together] [--profile FILE]
One service per mode (`serve --no-dispatch`, its projections process beside it, each in a schema of its
own on one embedded PostgreSQL) runs for the whole bench; every round measures each row on each mode
back to back, the mode order flipped every round (ABBA...), so the machine's drift hits both alike;
with --together the modes' wrk runs go at the same time (each with --connections), so both services
share the same seconds of the same cores and their ratio is one of CPU cost, whatever else runs.
"off" is MEDIATASKS_TELEMETRY=false, "on" the default (instrumentation installed, no span exporter),
"otlp" spans and metrics exported over OTLP/HTTP to a sink on 127.0.0.1 that decodes every trace
export, a share --ratio of traces kept. Rate limits and the active-task cap are set out of reach (but
checked on every request), so the rows measure the routes, not 429s. Printed per row: medians over
the rounds of req/s and of CPU per request from /proc (the API process, and the service: API plus
projections process), the ratio of the medians and the median of each round's own ratio.
With --profile, one more round (not counted above) records each row of each mode with py-spy
(`--gil`: the GIL holder of the API process) in FILE.<mode>.<row>, and prints GIL samples per
request and the share of samples whose innermost package frame is OpenTelemetry's or this project's
infrastructure/observability (bench/profile_summary.py reads the files).
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

os.environ.setdefault("MEDIATASKS_TEST_POSTGRES", "embedded")  # a server of our own: no other load on it

import httpx
from _harness import WrkResult, cpu_seconds, database, new_user, own_cpu_seconds, service, wrk
from http_submit import profiled
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from profile_summary import summarise

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"
BODY = {"url": TIKTOK, "output_type": "subtitles"}
OUT_OF_REACH = {
    "rate_limit_submissions": "1000000/second",
    "rate_limit_reads": "1000000/second",
    "max_active_tasks": "1000000000",
}
ROWS = ("post-1", "post-64", "get-task", "get-account")


class OtlpSink(ThreadingHTTPServer):
    """Accepts OTLP/HTTP protobuf posts on a loopback port and counts the spans it decodes."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SinkHandler)
        self.spans: Counter[str] = Counter()
        self.posts = 0
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _SinkHandler(BaseHTTPRequestHandler):
    server: OtlpSink

    def log_message(self, *_: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        names: list[str] = []
        if self.path == "/v1/traces":
            request = ExportTraceServiceRequest.FromString(body)
            names = [span.name for r in request.resource_spans for s in r.scope_spans for span in s.spans]
        with self.server.lock:
            self.server.posts += 1
            self.server.spans.update(names)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()


class Mode:
    """One running service and the users and tasks its rows are sent as."""

    def __init__(self, url: str, pid: int) -> None:
        self.url, self.pid = url, pid
        self.one = [new_user(url)]
        self.many = [new_user(url) for _ in range(64)]
        self.tasks = []
        for key in self.many:
            r = httpx.post(url + "/v1/tasks", json=BODY, headers={"Authorization": f"Bearer {key}"}, timeout=30)
            r.raise_for_status()
            self.tasks.append((key, f"/v1/tasks/{r.json()['task_id']}"))

    def run(self, row: str, seconds: int, connections: int) -> WrkResult:
        post = {"method": "POST", "body": BODY}
        if row == "post-1":
            return wrk(self.url + "/v1/tasks", connections=connections, seconds=seconds, api_keys=self.one, **post)
        if row == "post-64":
            return wrk(self.url + "/v1/tasks", connections=connections, seconds=seconds, api_keys=self.many, **post)
        if row == "get-task":
            return wrk(self.url, connections=connections, seconds=seconds, targets=self.tasks)
        return wrk(self.url + "/v1/account", connections=connections, seconds=seconds, api_keys=self.many)


class Sample:
    def __init__(self, result: WrkResult, seconds: int, api_cpu: float, service_cpu: float) -> None:
        requests = max(1.0, result.requests_per_second * seconds)
        self.result = result
        self.api_ms = api_cpu / requests * 1e3
        self.service_ms = service_cpu / requests * 1e3


def measure(mode: Mode, row: str, args: argparse.Namespace) -> Sample:
    api0, service0 = own_cpu_seconds(mode.pid), cpu_seconds(mode.pid)[0]
    result = mode.run(row, args.seconds, args.connections)
    return Sample(result, args.seconds, own_cpu_seconds(mode.pid) - api0, cpu_seconds(mode.pid)[0] - service0)


def median_of(samples: list[Sample], value: Callable[[Sample], float]) -> float:
    return statistics.median(value(s) for s in samples)


def profile_round(running: dict[str, Mode], rows: list[str], args: argparse.Namespace) -> list[str]:
    """One round under py-spy: per row and mode, GIL samples per request and telemetry's share of them."""
    lines = []
    for row in rows:
        for mode, service_mode in running.items():
            path = args.profile.with_name(f"{args.profile.name}.{mode}.{row}")
            with profiled(service_mode.pid, path, args.seconds):
                result = service_mode.run(row, args.seconds, args.connections)
            _, packages, project, total = summarise(path.read_text().splitlines())
            observability = sum(n for name, n in project.items() if name.startswith("infrastructure/observability"))
            share = (packages["opentelemetry"] + observability) / max(1, total)
            per_request = total / max(1.0, result.requests_per_second * args.seconds)
            lines.append(
                f"| {row} | {mode} | {result.requests_per_second:,.0f} | {per_request:.3f} | {100 * share:.1f} % |"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--modes",
        default="off,on",
        help="comma-separated: off, on, otlp (a digit after one, e.g. off,off2, runs that mode twice: an A/A control); "
        "the first is the baseline",
    )
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated: " + ", ".join(ROWS))
    parser.add_argument("--ratio", type=float, default=0.1, help="the otlp mode keeps this share of traces")
    parser.add_argument("--together", action="store_true", help="the modes' rows run at the same time")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of one more round: FILE.<mode>.<row>")
    args = parser.parse_args()
    modes, rows = args.modes.split(","), args.rows.split(",")
    sink = OtlpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
    settings = {
        "off": {"telemetry": "false"},
        "on": {"telemetry": "true"},
        "otlp": {"telemetry": "true", "otel_exporter": "otlp", "otel_trace_ratio": str(args.ratio)},
    }
    samples: dict[tuple[str, str], list[Sample]] = defaultdict(list)
    with database() as pg, ExitStack() as stack:
        running = {}
        for mode in modes:
            svc = stack.enter_context(
                service(
                    pg,
                    "--no-dispatch",
                    postgres_schema=f"bench_telemetry_{mode}",
                    **settings[mode.rstrip("0123456789")],
                    **OUT_OF_REACH,
                )
            )
            running[mode] = Mode(svc.url, svc.proc.pid)
        for row in rows:  # warm-up: each row once on each service
            for mode in modes:
                running[mode].run(row, 1, args.connections)
        for n in range(args.rounds):
            order = modes if n % 2 == 0 else modes[::-1]
            for row in rows:
                if args.together:
                    with ThreadPoolExecutor(len(order)) as pool:
                        measured = list(pool.map(lambda mode, row=row: measure(running[mode], row, args), order))
                else:
                    measured = [measure(running[mode], row, args) for mode in order]
                for mode, sample in zip(order, measured, strict=True):
                    samples[row, mode].append(sample)
                    print(
                        f"  round {n + 1} {row:<11} {mode:<4} {sample.result.row()}  API {sample.api_ms:.3f}, "
                        f"service {sample.service_ms:.3f} ms CPU/req",
                        file=sys.stderr,
                        flush=True,
                    )
        profiles = profile_round(running, rows, args) if args.profile else []
    sink.shutdown()
    how = f"of {' and '.join(modes)} at the same time" if args.together else f"alternating {' / '.join(modes)}"
    print(
        f"wrk, {args.connections} connections, {args.seconds} s per row, {args.rounds} rounds {how}, "
        "1 uvicorn worker; medians over the rounds\n"
    )
    base = modes[0]
    print(
        "| row | telemetry | req/s | p99 ms | API CPU ms/req | service CPU ms/req | req/s × "
        f"{base} (medians) | × {base}, per round: median (min–max) | service CPU − {base} |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        for mode in modes:
            mine, theirs = samples[row, mode], samples[row, base]
            rps = median_of(mine, lambda s: s.result.requests_per_second)
            paired = [
                a.result.requests_per_second / b.result.requests_per_second for a, b in zip(mine, theirs, strict=True)
            ]
            service_ms = median_of(mine, lambda s: s.service_ms)
            extra_us = (service_ms - median_of(theirs, lambda s: s.service_ms)) * 1e3
            print(
                f"| {row} | {mode} | {rps:,.0f} | {median_of(mine, lambda s: s.result.p99_ms):.1f} | "
                f"{median_of(mine, lambda s: s.api_ms):.3f} | {service_ms:.3f} | "
                f"{rps / median_of(theirs, lambda s: s.result.requests_per_second):.3f} | "
                f"{statistics.median(paired):.3f} ({min(paired):.2f}–{max(paired):.2f}) | {extra_us:+.0f} µs |"
            )
    if profiles:
        print("\n| row | telemetry | req/s while profiled | GIL samples per request | OpenTelemetry's share |")
        print("|---|---|---:|---:|---:|")
        for line in profiles:
            print(line)
    non_2xx = sum(s.result.non_2xx for group in samples.values() for s in group)
    if non_2xx:
        print(f"\n{non_2xx} answers were not 2xx")
    if "otlp" in modes:
        print(
            f"\nthe sink received {sink.posts} OTLP posts holding {sum(sink.spans.values())} spans: "
            + ", ".join(f"{name} {n}" for name, n in sink.spans.most_common(8))
        )


if __name__ == "__main__":
    main()
