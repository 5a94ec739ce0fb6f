"""The service survives its database: a restart, a crash, every connection cut, and its own SIGKILL.

A private PostgreSQL (initdb in a temporary directory) sits behind a TCP proxy written for the test.
Clients submit with Idempotency-Keys from several threads and retry on 5xx, while each fault is
injected in turn. Afterwards every acknowledged task is terminal, none was charged twice, each
terminal failure was refunded once, each balance in the API is the fold of its ledger, `mediatasks
audit verify` is clean, no answer was a 500, and after each fault /readyz was 200 again within 10 s
and a new task was extracted within 30 s. The figures are printed (run with -s to see them).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import ADMIN_TOKEN, platform_settings
from tests.support.database_faults import PrivateCluster, TcpProxy, postgres_binaries
from tests.support.fake_platform import FakePlatform
from tests.support.service_process import ServiceProcess

pytestmark = pytest.mark.skipif(postgres_binaries() is None, reason="no PostgreSQL binaries for a private cluster")

CLIENTS = 4
SUBMIT_EVERY_SECONDS = 0.7
FAILING_SHARE = 0.2  # of submissions, for media the platform says is gone (terminal failure → refund)
OUTAGE_SECONDS = 2.0  # how long the proxy refuses connections after cutting them all
BETWEEN_FAULTS = CLIENTS  # submissions acknowledged under load before the first fault and after each one
READY_WITHIN = 10.0
EXTRACTED_WITHIN = 30.0
TERMINAL = ("extracted", "failed")
FAULT_ORDERS = {
    "restart-crash-cut-kill": ("restart", "crash", "cut", "service_kill"),
    "cut-kill-crash-restart": ("cut", "service_kill", "crash", "restart"),
}


@dataclass
class Acknowledged:
    task_id: str
    user: str
    mode: str


@dataclass
class Figures:
    fault: str
    down_seconds: float
    ready_after_seconds: float
    extracted_after_seconds: float
    not_ready_answers: int
    slowest_readyz_seconds: float


@dataclass
class Deployment:
    """The service on the private cluster through the proxy; restarted (SIGKILL) on demand."""

    env: dict[str, str]
    log_dir: Path
    process: ServiceProcess | None = None
    url: str = ""
    starts: int = 0

    def start(self) -> None:
        self.starts += 1
        self.process = ServiceProcess(
            env=self.env, cwd=self.log_dir, log_path=self.log_dir / f"serve-{self.starts}.log"
        )
        self.process.wait_ready()
        self.url = self.process.url

    def kill(self) -> None:
        assert self.process is not None
        self.process.proc.send_signal(signal.SIGKILL)
        self.process.proc.wait()
        self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class Load:
    """Clients submitting with Idempotency-Keys and retrying on 5xx (and while the service is down)."""

    deployment: Deployment
    platform: FakePlatform
    keys: dict[str, str]
    stopping: threading.Event = field(default_factory=threading.Event)
    acknowledged: list[Acknowledged] = field(default_factory=list)
    answers: Counter[int] = field(default_factory=Counter)
    bad_errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def request(self, method: str, path: str, key: str, **kwargs: object) -> httpx.Response | None:
        try:
            r = httpx.request(
                method,
                self.deployment.url + path,
                headers={"Authorization": f"Bearer {key}", **kwargs.pop("headers", {})},
                timeout=15,
                **kwargs,
            )  # type: ignore[arg-type]
        except httpx.HTTPError:
            return None  # the service is down (SIGKILL) or the connection broke: the client retries
        with self.lock:
            self.answers[r.status_code] += 1
            if r.status_code >= 500 and not (
                r.status_code == 503 and r.headers.get("Retry-After") and "error" in r.json()
            ):
                self.bad_errors.append(f"{method} {path} → {r.status_code}: {r.text[:300]}")
        return r

    def submit(self, user: str, mode: str, *, give_up: threading.Event | None = None) -> str | None:
        """Submit until acknowledged (2xx), with the same Idempotency-Key each time."""
        key, idempotency_key = self.keys[user], uuid.uuid4().hex
        body = {"url": self.platform.media_url(mode, size=20_000), "output_type": "subtitles", "languages": ["en"]}
        while give_up is None or not give_up.is_set():
            r = self.request("POST", "/v1/tasks", key, json=body, headers={"Idempotency-Key": idempotency_key})
            if r is not None and r.status_code in (200, 202):
                task_id = r.json()["task_id"]
                with self.lock:
                    self.acknowledged.append(Acknowledged(task_id, user, mode))
                return task_id
            assert r is None or r.status_code >= 500, r.text
            time.sleep(0.2)
        return None

    def wait_acknowledged(self, more: int, timeout: float = 30) -> None:
        """Until `more` submissions beyond those acknowledged so far are acknowledged (the load goes on)."""
        target = len(self.acknowledged) + more
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < target:
            assert time.monotonic() < deadline, f"{len(self.acknowledged)} of {target} submissions acknowledged"
            time.sleep(0.05)

    def client(self, user: str) -> None:
        while not self.stopping.is_set():
            mode = "404" if random.random() < FAILING_SHARE else "ok"  # noqa: S311
            task_id = self.submit(user, mode, give_up=self.stopping)
            if task_id is not None:
                self.request("GET", f"/v1/tasks/{task_id}", self.keys[user])
                self.request("GET", "/v1/account", self.keys[user])
            self.stopping.wait(SUBMIT_EVERY_SECONDS)


@pytest.fixture(scope="module")
def cluster() -> Iterator[PrivateCluster]:
    server = PrivateCluster()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fault_platform() -> Iterator[FakePlatform]:
    with FakePlatform() as fake:
        yield fake


def readyz(url: str) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        status: int | None = httpx.get(url + "/readyz", timeout=10).status_code
    except httpx.HTTPError:
        status = None
    return status, time.monotonic() - started


def wait_ready(deployment: Deployment, since: float, timeout: float = 30) -> tuple[float, int, float]:
    """Seconds from `since` until /readyz answers 200; also the 503s seen and the slowest answer."""
    not_ready, slowest = 0, 0.0
    while True:
        status, took = readyz(deployment.url)
        slowest = max(slowest, took)
        if status == 200:
            return time.monotonic() - since, not_ready, slowest
        not_ready += status == 503
        assert time.monotonic() - since < timeout, (
            f"not ready after {timeout} s: {deployment.process and deployment.process.log()}"
        )
        time.sleep(0.1)


def task_of(deployment: Deployment, key: str, task_id: str) -> dict | None:
    try:
        r = httpx.get(f"{deployment.url}/v1/tasks/{task_id}", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    except httpx.HTTPError:
        return None
    assert r.status_code != 500, r.text
    return r.json() if r.status_code == 200 else None


def wait_extracted(deployment: Deployment, load: Load, user: str, timeout: float) -> float:
    started = time.monotonic()
    task_id = load.submit(user, "ok")
    assert task_id is not None
    while True:
        task = task_of(deployment, load.keys[user], task_id)
        if task is not None and task["status"] == "extracted":
            return time.monotonic() - started
        assert time.monotonic() - started < timeout, f"task {task_id} not extracted: {task}"
        time.sleep(0.1)


def inject(fault: str, cluster: PrivateCluster, proxy: TcpProxy, deployment: Deployment) -> tuple[float, float, float]:
    """Inject one fault; returns the seconds the database or service was away, the moment it was back,
    and the slowest /readyz answer while the database was away (0 if not asked)."""
    started = time.monotonic()
    slowest = 0.0
    if fault == "restart":
        cluster.restart()
    elif fault == "crash":
        cluster.crash_and_start()
    elif fault == "cut":
        proxy.refusing = True
        proxy.cut_all()
        deadline = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < deadline:  # while it is away, /readyz says so within its timeout
            status, took = readyz(deployment.url)
            slowest = max(slowest, took)
            assert status == 503 and took < 3.0, (status, took)  # 1 s on the server, plus a loaded machine
            time.sleep(0.2)
        proxy.refusing = False
    elif fault == "service_kill":
        deployment.kill()
        deployment.start()
    else:
        raise ValueError(fault)
    if fault in ("restart", "crash"):
        cluster.wait_accepting()
    back = time.monotonic()
    return back - started, back, slowest


def follower_restarts(deployment: Deployment) -> dict[str, float]:
    r = httpx.get(deployment.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=10)
    assert r.status_code == 200, r.text
    text = r.text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("mediatasks_follower_restarts") and "follower=" in line:
            name = line.split('follower="', 1)[1].split('"', 1)[0]
            found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return found


def settle(deployment: Deployment, load: Load, timeout: float = 90) -> dict[str, dict]:
    """Wait until every acknowledged task is terminal and its refund (if failed) is in the ledger."""
    deadline = time.monotonic() + timeout
    final: dict[str, dict] = {}
    for ack in load.acknowledged:
        while True:
            task = task_of(deployment, load.keys[ack.user], ack.task_id)
            if (
                task is not None
                and task["status"] in TERMINAL
                and (task["status"] == "extracted" or task.get("refunded_credits"))
            ):
                final[ack.task_id] = task
                break
            assert time.monotonic() < deadline, f"task stuck: {ack} {task}"
            time.sleep(0.2)
    return final


@pytest.mark.parametrize("order", list(FAULT_ORDERS))
def test_every_acknowledged_task_survives_each_database_fault(
    order: str, cluster: PrivateCluster, fault_platform: FakePlatform, tmp_path: Path
) -> None:
    proxy = TcpProxy(cluster.port)
    schema = "faults_" + uuid.uuid4().hex[:8]
    env = {
        "MEDIATASKS_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres",
        "MEDIATASKS_POSTGRES_SCHEMA": schema,
        "MEDIATASKS_ADMIN_TOKEN": ADMIN_TOKEN,
        "MEDIATASKS_DATA_DIR": str(tmp_path / "data"),
        **{
            f"MEDIATASKS_{k.upper()}": v
            for k, v in platform_settings(
                fault_platform,
                catch_up_seconds="0.5",
                lease_seconds="4",
                retry_base_seconds="0.2",
                max_attempts="3",
                workers="4",
                postgres_pool_size="2",
                postgres_max_overflow="8",
                follower_backoff_base_seconds="0.2",
                follower_backoff_cap_seconds="2",
            ).items()
        },
    }
    deployment = Deployment(env, tmp_path)
    deployment.start()
    figures: list[Figures] = []
    restarts: list[dict[str, float]] = []
    load: Load | None = None
    try:
        keys = {}
        for n in range(CLIENTS):
            user = f"client{n}"
            r = httpx.post(
                deployment.url + "/v1/admin/users",
                json={"user_id": user, "credits": 10_000},
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=30,
            )
            assert r.status_code == 201, r.text
            keys[user] = r.json()["api_key"]
        load = Load(deployment, fault_platform, keys)
        clients = [threading.Thread(target=load.client, args=(user,), daemon=True) for user in keys]
        for thread in clients:
            thread.start()
        load.wait_acknowledged(BETWEEN_FAULTS)
        for fault in FAULT_ORDERS[order]:
            if fault == "service_kill":
                restarts.append(follower_restarts(deployment))
            down, back, slowest_away = inject(fault, cluster, proxy, deployment)
            ready_after, not_ready, slowest = wait_ready(deployment, back)
            extracted_after = wait_extracted(deployment, load, "client0", EXTRACTED_WITHIN)
            figures.append(
                Figures(
                    fault,
                    round(down, 2),
                    round(ready_after, 2),
                    round(extracted_after, 2),
                    not_ready,
                    round(max(slowest, slowest_away), 2),
                )
            )
            load.wait_acknowledged(BETWEEN_FAULTS)
        load.stopping.set()
        for thread in clients:
            thread.join(timeout=30)
        final = settle(deployment, load)
        restarts.append(follower_restarts(deployment))

        balances_checked = 0
        for user, key in keys.items():
            account = httpx.get(
                deployment.url + "/v1/account",
                params={"limit": 200},
                headers={"Authorization": f"Bearer {key}"},
                timeout=10,
            ).json()
            entries = account["entries"]
            assert len(entries) < 200, "the ledger page is not the whole ledger"
            assert account["balance"] == sum(e["amount"] for e in entries), (user, account)
            charges = Counter(e["task_id"] for e in entries if e["kind"] == "charge")
            refunds = Counter(e["task_id"] for e in entries if e["kind"] == "refund")
            assert all(n == 1 for n in charges.values()), charges
            for ack in (a for a in load.acknowledged if a.user == user):
                assert charges[ack.task_id] == 1, ack
                expected = 1 if final[ack.task_id]["status"] == "failed" else 0
                assert refunds[ack.task_id] == expected, (ack, final[ack.task_id])
            balances_checked += 1
        audit = subprocess.run(
            [sys.executable, "-m", "infrastructure.entrypoints.cli", "audit", "verify"],
            env={**env, "MEDIATASKS_DATABASE_URL": cluster.url, "PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
        )
        assert audit.returncode == 0, audit.stdout + audit.stderr
        outcomes = Counter(task["status"] for task in final.values())
        print(
            f"\n[{order}] {len(load.acknowledged)} acknowledged tasks: {dict(outcomes)}; answers "
            f"{dict(sorted(load.answers.items()))}; follower restarts {restarts}"
        )
        for f in figures:
            print(
                f"  {f.fault:<13} away {f.down_seconds:>5.2f} s, /readyz 200 after {f.ready_after_seconds:>5.2f} s "
                f"({f.not_ready_answers} answers 503, slowest {f.slowest_readyz_seconds:.2f} s), "
                f"new task extracted after {f.extracted_after_seconds:>5.2f} s"
            )
        assert load.answers[500] == 0
        assert load.bad_errors == []
        assert balances_checked == CLIENTS
        for f in figures:
            assert f.ready_after_seconds <= READY_WITHIN, f
            assert f.extracted_after_seconds <= EXTRACTED_WITHIN, f
        assert sum(restarts[0].values()) >= 1, "a database fault restarted no follower"
    finally:
        if load is not None:
            load.stopping.set()
        deployment.stop()
        proxy.close()
