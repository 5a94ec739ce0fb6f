"""QStash delivery at scale on one PostgreSQL: the emulator, three `mediatasks worker` processes and one
`mediatasks serve --no-dispatch` (API, projections, publisher and takeover sweeper).

The emulator injects duplicate and concurrent duplicate deliveries, and a worker is killed with
SIGKILL mid-download; the event history must still show one Extracted per successful task, one
charge per task, one refund per failed task, and balances equal to the ledger.
"""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from application.audit import replay
from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.tasks import MediaTask
from infrastructure.settings import Settings
from tests.e2e.conftest import ADMIN_TOKEN, platform_settings, start_service
from tests.support.fake_platform import FakePlatform
from tests.support.postgres import drop_schema
from tests.support.qstash_emulator import QStashEmulator
from tests.support.service_process import ServiceProcess

PUBLIC_URL = "https://mediatasks.example"
WORKERS = 3
USERS = 20
CREDITS = 100
LEASE_SECONDS = 4
PERMANENT_FAILURES = {"404": "media_not_found", "private": "media_private", "no-subtitles": "no_subtitles"}


@dataclass
class Cluster:
    serve: ServiceProcess
    workers: list[ServiceProcess]
    qstash: QStashEmulator
    app: MediaTasks
    platform: FakePlatform

    def user(self, user_id: str, credits: int = CREDITS) -> httpx.Client:
        r = httpx.post(
            self.serve.url + "/v1/admin/users",
            json={"user_id": user_id, "credits": credits},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=30,
        )
        assert r.status_code == 201, r.text
        return httpx.Client(
            base_url=self.serve.url, headers={"Authorization": f"Bearer {r.json()['api_key']}"}, timeout=30
        )

    def history(self) -> dict[str, list[Any]]:
        """Every event of the log, grouped by aggregate id."""
        events: dict[str, list[Any]] = defaultdict(list)
        for _, event in replay(self.app):
            events[str(event.originator_id)].append(event)
        return events


@pytest.fixture(scope="module")
def cluster(pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    log_dir = Path(tmp_path_factory.mktemp("qstash"))
    with (
        FakePlatform() as platform,
        QStashEmulator(
            max_retries=3,
            retry_delay_scale=0.1,
            duplicate_ratio=0.2,
            concurrent_duplicate_ratio=0.1,
            delivery_timeout_s=60,
            seed=11,
        ) as qstash,
    ):
        settings = platform_settings(
            platform,
            dispatch="qstash",
            public_url=PUBLIC_URL,
            qstash_url=qstash.url,
            qstash_token=qstash.token,
            qstash_current_signing_key=qstash.current_signing_key,
            qstash_next_signing_key=qstash.next_signing_key,
            qstash_retries="3",
            lease_seconds=str(LEASE_SECONDS),
            retry_base_seconds="0.2",
            telemetry="false",
            postgres_pool_size="2",
            postgres_max_overflow="6",
        )
        serve, schema = start_service(pg_database_one, log_dir, "--no-dispatch", **settings)
        workers: list[ServiceProcess] = []
        app = None
        try:
            with ThreadPoolExecutor(WORKERS) as pool:
                starting = [
                    pool.submit(
                        start_service, pg_database_one, log_dir, command="worker", postgres_schema=schema, **settings
                    )
                    for _ in range(WORKERS)
                ]
                workers.extend(future.result()[0] for future in starting)
            qstash.route(PUBLIC_URL, *(worker.url for worker in workers))
            app = MediaTasks(
                env=Settings(postgres_schema=schema, postgres_pool_size=1, postgres_max_overflow=1).event_store_env(
                    pg_database_one
                )
            )
            yield Cluster(serve, workers, qstash, app, platform)
        finally:
            if app is not None:
                app.close()
            for process in [*workers, serve]:
                process.stop()
            drop_schema(pg_database_one, schema)


def wait_until_terminal(clients: list[httpx.Client], expected: int, timeout: float) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        tasks = [t for c in clients for t in c.get("/v1/tasks", params={"limit": 100}).json()["tasks"]]
        # a failed task is settled once its refund is in the read model: the refund issuer appends it after
        open_tasks = [
            t for t in tasks if t["status"] != "extracted" and not (t["status"] == "failed" and t["refunded_credits"])
        ]
        if len(tasks) == expected and not open_tasks:
            return tasks
        assert time.monotonic() < deadline, f"{len(open_tasks)} of {len(tasks)} tasks not terminal: {open_tasks[:3]}"
        time.sleep(0.25)


def assert_paid_exactly_once(
    cluster: Cluster, clients: dict[str, httpx.Client], expected: dict[str, str]
) -> dict[str, int]:
    """Each task charged once, extracted once or refunded once as `expected` says; balances equal the ledger."""
    events = cluster.history()
    counts: Counter[str] = Counter()
    charges: Counter[str] = Counter()
    refunds: Counter[str] = Counter()
    for aggregate_events in events.values():
        for event in aggregate_events:
            counts[type(event).__name__] += 1
            if isinstance(event, CreditAccount.Charged):
                charges[str(event.task_id)] += 1
            if isinstance(event, CreditAccount.Refunded):
                refunds[str(event.task_id)] += 1
    for task_id, status in expected.items():
        extracted = [e for e in events[task_id] if isinstance(e, MediaTask.Extracted)]
        terminal = [e for e in events[task_id] if isinstance(e, MediaTask.Failed) and e.terminal]
        assert charges[task_id] == 1, task_id
        if status == "extracted":
            assert (len(extracted), len(terminal), refunds[task_id]) == (1, 0, 0), task_id
        else:
            assert (len(extracted), len(terminal), refunds[task_id]) == (0, 1, 1), task_id
            assert terminal[0].code == status, (task_id, terminal[0].code)
    for user_id, client in clients.items():
        account = client.get("/v1/account").json()
        ledger = sum(e["amount"] for e in account["entries"])  # charges are negative
        assert account["balance"] == ledger, (user_id, account)
    verify = httpx.get(
        cluster.serve.url + "/v1/admin/audit/verify", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60
    ).json()
    assert verify["ok"], verify
    return dict(counts)


@pytest.mark.slow
def test_200_tasks_with_duplicate_deliveries_are_each_paid_and_finished_once(cluster: Cluster) -> None:
    clients = {f"load{n}": cluster.user(f"load{n}") for n in range(USERS)}
    links: list[tuple[str, str, str, str]] = []  # user, url, output type, expected outcome
    modes = ["ok"] * 3 + list(PERMANENT_FAILURES)  # half succeed, half fail for good
    for n in range(200):
        mode = modes[n % len(modes)]
        output_type = ("subtitles", "video", "video_and_subtitles")[n % 3] if mode != "no-subtitles" else "subtitles"
        links.append(
            (
                f"load{n % USERS}",
                cluster.platform.media_url(mode, size=32 * 1024),
                output_type,
                "extracted" if mode == "ok" else PERMANENT_FAILURES[mode],
            )
        )
    started = time.monotonic()

    def submit(link: tuple[str, str, str, str]) -> tuple[str, str]:
        user_id, url, output_type, outcome = link
        r = clients[user_id].post("/v1/tasks", json={"url": url, "output_type": output_type, "languages": ["en"]})
        assert r.status_code == 202, r.text
        return r.json()["task_id"], outcome

    with ThreadPoolExecutor(8) as pool:
        expected = dict(pool.map(submit, links))
    tasks = wait_until_terminal(list(clients.values()), 200, timeout=90)
    finished_s = time.monotonic() - started
    cluster.qstash.wait_until_idle(timeout=30)
    assert {t["task_id"]: t["status"] for t in tasks} == {
        task_id: "extracted" if outcome == "extracted" else "failed" for task_id, outcome in expected.items()
    }

    counts = assert_paid_exactly_once(cluster, clients, expected)
    assert counts["Extracted"] == sum(o == "extracted" for o in expected.values())
    deliveries = cluster.qstash.deliveries
    kinds = Counter(d.kind for d in deliveries)
    answers = Counter(d.status_code for d in deliveries)
    assert kinds["duplicate"] > 0 and kinds["concurrent_duplicate"] > 0, kinds
    assert not [code for code in answers if code is None or 400 <= code < 500 and code != 409], answers
    takeovers = [p for p in cluster.qstash.publishes if not p.headers["upstash-deduplication-id"].endswith("-1")]
    assert not takeovers  # no worker died: the sweeper had nothing to take over
    print(
        f"\n200 tasks terminal in {finished_s:.1f} s; {len(cluster.qstash.publishes)} publishes; "
        f"deliveries {dict(kinds)}; answers {dict(answers)}; events {counts}"
    )


@pytest.mark.slow
def test_a_worker_killed_mid_download_has_its_tasks_taken_over_after_the_lease(cluster: Cluster) -> None:
    client = cluster.user("victims", credits=50)
    size = 16384 * 60  # 60 pieces 0.05 s apart: ~3 s of download
    task_ids = []
    for _ in range(9):
        r = client.post(
            "/v1/tasks", json={"url": cluster.platform.media_url("slow", size=size), "output_type": "video"}
        )
        task_ids.append(r.json()["task_id"])
    deadline = time.monotonic() + 30
    while not all(client.get(f"/v1/tasks/{t}").json()["progress"] >= 35 for t in task_ids):
        assert time.monotonic() < deadline, "the downloads never got going"
        time.sleep(0.05)
    victim = cluster.workers[0]
    held = [t for t in task_ids if holder(client, t).endswith(f":{victim.proc.pid}")]
    victim.proc.send_signal(signal.SIGKILL)  # mid-download: no Failed, no cleanup
    victim.proc.wait()
    killed_at = time.monotonic()
    assert held, "the killed worker held none of the downloads"

    tasks = wait_until_terminal([client], len(task_ids), timeout=60)
    assert {t["status"] for t in tasks} == {"extracted"}, tasks
    events = cluster.history()
    for task_id in held:
        failed = [e.code for e in events[task_id] if isinstance(e, MediaTask.Failed)]
        assert failed == ["lease_expired"], (task_id, failed)
        assert sum(isinstance(e, MediaTask.Extracted) for e in events[task_id]) == 1
        assert next(t for t in tasks if t["task_id"] == task_id)["attempts"] == 2
    account = client.get("/v1/account").json()
    assert account["balance"] == 50 - 2 * len(task_ids)
    assert Counter(e["kind"] for e in account["entries"]) == {"grant": 1, "charge": len(task_ids)}
    takeovers = [
        p
        for p in cluster.qstash.publishes
        if p.headers["upstash-deduplication-id"].endswith("-2") and not p.deduplicated
    ]
    print(
        f"\nkilled worker held {len(held)} of {len(task_ids)} downloads; all extracted "
        f"{time.monotonic() - killed_at:.1f} s after the kill (lease {LEASE_SECONDS} s); "
        f"{len(takeovers)} takeovers published by the sweeper"
    )


def holder(client: httpx.Client, task_id: str) -> str:
    """The worker id of the task's latest attempt."""
    events = client.get(f"/v1/tasks/{task_id}/history").json()["events"]
    return [e for e in events if e["type"] == "Downloading"][-1]["data"]["worker_id"]
