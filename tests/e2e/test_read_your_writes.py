"""Read-your-writes for every read by the writer, with two uvicorn workers: right after its 202, a
client's GET /v1/account, GET /v1/tasks and GET /v1/tasks/{id} show its own write."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import RunningService, running_service

URL = "https://www.instagram.com/reel/Cabc123/"


@pytest.fixture(scope="module")
def two_workers(pg_database_one: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    with running_service(pg_database_one, tmp_path_factory.mktemp("ryw"), "--workers", "2", dispatch="none") as running:
        yield running


def test_each_writer_reads_its_own_charge_right_after_the_202(two_workers: RunningService) -> None:
    service = two_workers
    _, key = service.new_user(9)

    def submit_and_read(i: int) -> tuple[int, str | None, dict, list[str], int]:
        with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
            r = c.post("/v1/tasks", json={"url": URL, "output_type": "subtitles"}, headers={"Idempotency-Key": f"k{i}"})
            task_id = r.json().get("task_id") if r.status_code == 202 else None
            account = c.get("/v1/account", params={"limit": 50}).json()
            listed = [t["task_id"] for t in c.get("/v1/tasks", params={"limit": 50}).json()["tasks"]]
            status = c.get(f"/v1/tasks/{task_id}").status_code if task_id else 0
            return r.status_code, task_id, account, listed, status

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(submit_and_read, range(20)))
    accepted = [r for r in results if r[0] == 202]
    assert len(accepted) == 9 and all(r[0] == 402 for r in results if r[0] != 202)
    for _, task_id, account, listed, status in accepted:
        charged = {e["task_id"] for e in account["entries"] if e["kind"] == "charge"}
        assert task_id in charged and task_id in listed and status == 200
        assert account["balance"] <= 8  # this writer's own charge is in the balance it reads
    with httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {key}"}, timeout=30) as c:
        assert c.get("/v1/account").json()["balance"] == 0


def test_a_grant_is_read_back_at_once(two_workers: RunningService) -> None:
    user_id, key = two_workers.new_user(1)
    for amount in range(1, 6):
        r = httpx.post(
            two_workers.url + f"/v1/admin/users/{user_id}/credits",
            json={"amount": amount},
            headers=two_workers.admin,
            timeout=30,
        )
        assert r.status_code == 200
        balance = r.json()["balance"]
        read = httpx.get(two_workers.url + "/v1/account", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert read.json()["balance"] == balance
