"""Requests/s of POST /v1/tasks with telemetry off and on (OTLP/HTTP to a local sink), in one run.

Run: .venv/bin/python bench/telemetry_overhead.py [--seconds 10] [--connections 32] [--rounds 2]
"on" is the default instrumentation (FastAPI, psycopg and httpx spans, the pipeline's metrics) with
MEDIATASKS_OTEL_EXPORTER=otlp pointed at a sink on 127.0.0.1 that decodes every trace export;
"off" is MEDIATASKS_TELEMETRY=false. Rounds alternate off/on so drift hits both alike.
Besides req/s it prints the service process's CPU per request and what telemetry adds to it in µs:
that figure carries over to a faster write path, where the same µs are a larger share.
Dispatch is not running, so only the write path is measured (as bench/http_submit.py does).
"""

from __future__ import annotations

import argparse
import gzip
import os
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _harness import WrkResult, database, new_user, service, wrk
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

TIKTOK = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(pg: dict[str, str], args: argparse.Namespace, **settings: str) -> tuple[WrkResult, float]:
    """wrk's result and the service process's CPU milliseconds per request."""
    with service(pg, "--no-dispatch", **settings) as svc:
        keys = [new_user(svc.url) for _ in range(args.users)]
        wrk(
            svc.url + "/v1/tasks",
            connections=args.connections,
            seconds=2,
            method="POST",  # warm-up
            body={"url": TIKTOK, "output_type": "subtitles"},
            api_keys=keys,
        )
        cpu = cpu_seconds(svc.proc.pid)
        result = wrk(
            svc.url + "/v1/tasks",
            connections=args.connections,
            seconds=args.seconds,
            method="POST",
            body={"url": TIKTOK, "output_type": "subtitles"},
            api_keys=keys,
        )
        cpu = cpu_seconds(svc.proc.pid) - cpu
        return result, 1000 * cpu / (result.requests_per_second * args.seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ratio", type=float, default=0.1, help="the sampled mode keeps this share of traces")
    parser.add_argument("--users", type=int, default=64, help="submissions are spread over this many users")
    args = parser.parse_args()
    sink = OtlpSink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
    print(f"wrk, {args.connections} connections, {args.seconds} s per run, {args.users} users, 1 uvicorn worker\n")
    print(f"{'round':>5}  {'telemetry':<22} result")
    modes = {
        "off": {"telemetry": "false"},
        "on, every trace": {"otel_exporter": "otlp"},
        f"on, {args.ratio:g} of traces": {"otel_exporter": "otlp", "otel_trace_ratio": str(args.ratio)},
    }
    rps = dict.fromkeys(modes, 0.0)
    cpu = dict.fromkeys(modes, 0.0)
    with database() as pg:
        for n in range(1, args.rounds + 1):
            for label, settings in modes.items():
                result, cpu_ms = measure(pg, args, **settings)
                rps[label] += result.requests_per_second / args.rounds
                cpu[label] += cpu_ms / args.rounds
                print(f"{n:>5}  {label:<22} {result.row():<60} service CPU {cpu_ms:.2f} ms/request")
    sink.shutdown()
    print()
    for label in modes:
        ratio = rps[label] / rps["off"]
        print(
            f"{label:<22} {rps[label]:6.0f} req/s  on/off {ratio:.3f} (overhead {100 * (1 - ratio):5.1f}%)  "
            f"service CPU {cpu[label]:.2f} ms/request (+{1000 * (cpu[label] - cpu['off']):.0f} µs, "
            f"+{100 * (cpu[label] / cpu['off'] - 1):.1f}%)"
        )
    print(
        f"the sink received {sink.posts} OTLP posts holding {sum(sink.spans.values())} spans: "
        + ", ".join(f"{name} {n}" for name, n in sink.spans.most_common(8))
    )


if __name__ == "__main__":
    main()
