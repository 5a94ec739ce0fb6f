"""Shared pieces of the benchmarks: a PostgreSQL to run on, the service as a process, wrk."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.fake_platform import FakePlatform  # noqa: E402
from tests.support.postgres import database_url, fresh_database, server_kinds  # noqa: E402
from tests.support.service_process import ServiceProcess  # noqa: E402

ADMIN = "bench-admin-token"


def ensure_wrk() -> str:
    """wrk from Debian's packages (installed on first use)."""
    wrk = shutil.which("wrk")
    if wrk is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        wrk = shutil.which("wrk")
    assert wrk, "wrk is needed: apt-get install wrk"
    return wrk


@contextmanager
def database() -> Iterator[dict[str, str]]:
    with fresh_database(server_kinds()[0]) as pg:
        yield pg


def service_env(pg: dict[str, str], **settings: str) -> dict[str, str]:
    """The MEDIATASKS_* environment of a service on `pg` (its data under a fresh temporary folder)."""
    log_dir = Path(tempfile.mkdtemp(prefix="mt-bench-"))
    return {
        "MEDIATASKS_DATABASE_URL": database_url(pg),
        "MEDIATASKS_ADMIN_TOKEN": ADMIN,
        "MEDIATASKS_DATA_DIR": str(log_dir / "data"),
        **{f"MEDIATASKS_{k.upper()}": v for k, v in settings.items()},
    }


@contextmanager
def service(pg: dict[str, str], *args: str, **settings: str) -> Iterator[ServiceProcess]:
    env = service_env(pg, **settings)
    log_dir = Path(env["MEDIATASKS_DATA_DIR"]).parent
    process = ServiceProcess(*args, env=env, cwd=log_dir, log_path=log_dir / "service.log")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def new_user(url: str, credits: int = 1_000_000_000) -> str:
    user_id = "bench" + os.urandom(4).hex()
    r = httpx.post(
        url + "/v1/admin/users",
        json={"user_id": user_id, "credits": credits},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=30,
    )
    r.raise_for_status()
    return r.json()["api_key"]


@dataclass
class WrkResult:
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    errors: int

    def row(self) -> str:
        return (
            f"{self.requests_per_second:10.0f} req/s  p50 {self.p50_ms:7.2f} ms  p99 {self.p99_ms:7.2f} ms"
            + (f"  non-2xx {self.non_2xx}" if self.non_2xx else "")
            + (f"  errors {self.errors}" if self.errors else "")
        )


RESPONSE_TIMES_LUA = textwrap.dedent("""
    local ffi = require("ffi")
    ffi.cdef[[ typedef struct { long tv_sec; long tv_nsec; } timespec; int clock_gettime(int, timespec *); ]]
    local clock = ffi.new("timespec")
    local threads = 0
    setup = function(thread) threads = threads + 1; thread:set("thread_number", threads) end
    init = function(args) times = io.open("FOLDER/responses-" .. thread_number .. ".txt", "w") end
    response = function(status, headers, body)
      ffi.C.clock_gettime(1, clock)
      times:write(tonumber(clock.tv_sec) + tonumber(clock.tv_nsec) * 1e-9, "\\n")
    end
""")


def response_seconds(folder: Path) -> list[float]:
    """The arrival times written by `wrk(..., response_times=folder)`, in order."""
    return sorted(float(line) for path in folder.glob("responses-*.txt") for line in path.read_text().split())


def disk_bytes_written() -> int:
    """Bytes written so far to this machine's disks (every process's: /proc/diskstats' whole devices; loop, RAM
    and zram devices left out, and device-mapper and md ones, whose writes their member disks count again)."""
    sectors = 0
    for line in Path("/proc/diskstats").read_text().splitlines():
        fields = line.split()
        if Path("/sys/block", fields[2]).exists() and not fields[2].startswith(("loop", "zram", "ram", "dm-", "md")):
            sectors += int(fields[9])
    return sectors * 512


def wrk(
    url: str,
    *,
    connections: int,
    seconds: int,
    threads: int = 2,
    method: str = "GET",
    body: dict | None = None,
    headers: dict[str, str] | None = None,
    api_keys: list[str] | None = None,
    targets: list[tuple[str, str]] | None = None,
    response_times: Path | None = None,
) -> WrkResult:
    """Run wrk; with api_keys, each request is sent as a user picked at random; with targets
    ((api key, path) pairs, the path under `url`'s origin), each request is one pair picked at random;
    with response_times (a folder), each wrk thread writes there the CLOCK_MONOTONIC second at which
    each response arrived (read them with `response_seconds`)."""
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines.append(f"wrk.body = [[{json.dumps(body)}]]")
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    for k, v in (headers or {}).items():
        lines.append(f'wrk.headers["{k}"] = "{v}"')
    if api_keys:
        lines.append("keys = {" + ", ".join(f'"{k}"' for k in api_keys) + "}")
        lines.append(
            textwrap.dedent("""
            request = function()
              wrk.headers["Authorization"] = "Bearer " .. keys[math.random(#keys)]
              return wrk.format()
            end
        """)
        )
    if targets:
        lines.append("targets = {" + ", ".join(f'{{"{key}", "{path}"}}' for key, path in targets) + "}")
        lines.append(
            textwrap.dedent("""
            request = function()
              local target = targets[math.random(#targets)]
              wrk.headers["Authorization"] = "Bearer " .. target[1]
              return wrk.format(nil, target[2])
            end
        """)
        )
    if response_times is not None:
        lines.append(RESPONSE_TIMES_LUA.replace("FOLDER", str(response_times)))
    script.write_text(
        "\n".join(lines)
        + "\n"
        + textwrap.dedent("""
        done = function(summary, latency, requests)
          io.write(string.format("RESULT %f %f %f %d %d\\n", summary.requests / (summary.duration / 1e6),
            latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status,
            summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
        end
    """)
    )
    out = subprocess.run(
        [ensure_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    match = re.search(r"RESULT (\S+) (\S+) (\S+) (\d+) (\d+)", out)
    assert match, out
    rps, p50, p99, non2xx, errors = match.groups()
    return WrkResult(float(rps), float(p50), float(p99), int(non2xx), int(errors))


def _process_stat(pid: int) -> tuple[int, str, float] | None:
    """A process's parent, name and user + system CPU seconds so far (None once it has gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), name, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by the process itself (not its children)."""
    stat = _process_stat(pid)
    assert stat is not None, f"process {pid} has gone"
    return stat[2]


def cpu_seconds(root_pid: int) -> tuple[float, float]:
    """CPU seconds used so far by a process and its descendants, and by every PostgreSQL server process."""
    stats: dict[int, tuple[int, str, float]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _process_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    tree, grew = {root_pid}, True
    while grew:
        children = {pid for pid, (ppid, _, _) in stats.items() if ppid in tree} - tree
        tree |= children
        grew = bool(children)
    service = sum(stats[pid][2] for pid in tree if pid in stats)
    postgres = sum(cpu for _, name, cpu in stats.values() if name.startswith("postgres"))
    return service, postgres


class _PlatformInChild(FakePlatform):
    """A FakePlatform whose server runs in another process: this object only names its URLs."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self._child_port = port

    @property
    def port(self) -> int:
        return self._child_port


def _serve_platform(ready: Connection, stop: Event) -> None:
    with FakePlatform() as platform:
        ready.send(platform.port)
        stop.wait()


@contextmanager
def fake_platform_process() -> Iterator[FakePlatform]:
    """The fake platform served by a process of its own (its own GIL and CPU time, not the bench's).

    Only for what needs no state shared with the server (modes carried in the URL): counters,
    recorded requests and `set_default_mode` stay in the child.
    """
    context = multiprocessing.get_context("spawn")
    ours, theirs = context.Pipe()
    stop = context.Event()
    child = context.Process(target=_serve_platform, args=(theirs, stop), name="fake-platform", daemon=True)
    child.start()
    try:
        if not ours.poll(30):
            raise RuntimeError("the fake platform process did not start")
        yield _PlatformInChild(ours.recv())
    finally:
        stop.set()
        child.join(timeout=10)
        if child.is_alive():
            child.kill()
