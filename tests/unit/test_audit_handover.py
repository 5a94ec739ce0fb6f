"""verify's two processes: the task checks' state handed from one auditor to another, and the collector
held off full collections during a pass."""

from __future__ import annotations

import gc
import pickle
from datetime import timedelta
from typing import Any

import pytest

from application.audit import HistoryAuditor, TaskStatesOverlap
from domain.credits import CreditAccount
from infrastructure.collector import NEVER, SERVING_THRESHOLDS, full_collections_held, settle_for_serving
from tests.unit.test_domain_tasks import NOW, new_task


def history() -> list[tuple[int, Any]]:
    """One account, three tasks: extracted; failed and refunded; failed and never charged nor refunded."""
    account = CreditAccount.open("u1")
    account.grant(10)
    events: list[Any] = list(account.collect_events())
    for n in range(3):
        task = new_task(user_id="u1")
        if n < 2:
            account.charge(task.id, 1, 1)
        task.begin_attempt(now=NOW, lease=timedelta(minutes=10), worker_id="w")
        task.report_progress(attempt=1, stage="metadata", progress=20)
        if n == 0:
            task.complete(attempt=1, result={})
        else:
            task.fail(attempt=1, code="media_not_found", message="gone", retryable=False)
        if n == 1:
            account.refund(task.id, 1, task.refund(1))
        events += task.collect_events()
        events += account.collect_events()
    return list(enumerate(events, start=1))


def test_task_states_handed_over_through_pickle_finish_as_one_auditor_does() -> None:
    events = history()
    whole = HistoryAuditor(refunds_tracked_to=len(events))
    whole.feed_all(events)
    tasks_half, accounts_half = HistoryAuditor(), HistoryAuditor(refunds_tracked_to=len(events))
    tasks_half.feed_all(events, checks="tasks")
    accounts_half.feed_all(events, checks="accounts")

    accounts_half.add_task_states(pickle.loads(pickle.dumps(tasks_half.task_states())))

    assert accounts_half.tasks == whole.tasks
    assert list(accounts_half.tasks) == list(whole.tasks)  # the order finish() names them in
    split, one = accounts_half.finish(), whole.finish()
    assert [v.code for v in one.violations] == ["unpaid_task", "missing_refund"]
    assert split.violations == one.violations
    assert (split.tasks, split.accounts) == (one.tasks, one.accounts) == (3, 1)


def test_task_states_of_tasks_already_audited_are_refused_not_overwritten() -> None:
    events = history()
    tasks_half, overlapping = HistoryAuditor(), HistoryAuditor(refunds_tracked_to=len(events))
    tasks_half.feed_all(events, checks="tasks")
    overlapping.feed_all(events[:4])  # the first task's events: a hand-over that split the history wrong
    (first, *_) = overlapping.tasks
    with pytest.raises(TaskStatesOverlap) as refused:
        overlapping.add_task_states(pickle.loads(pickle.dumps(tasks_half.task_states())))
    assert refused.value.task_ids == [first]


def test_full_collections_held_while_a_pass_runs_and_restored_after() -> None:
    before = gc.get_threshold()

    @full_collections_held()
    def a_pass() -> list[tuple[int, int, int]]:
        seen = [gc.get_threshold()]
        with full_collections_held():  # a pass within a pass
            seen.append(gc.get_threshold())
        seen.append(gc.get_threshold())  # still held: the outer pass runs on
        return seen

    assert a_pass() == [(before[0], before[1], NEVER)] * 3
    assert gc.get_threshold() == before


def collections_during(work: Any) -> list[int]:
    """The generation of each collection the collector started while `work()` ran."""
    started: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(info["generation"])

    gc.callbacks.append(record)
    try:
        work()
    finally:
        gc.callbacks.remove(record)
    return started


def cyclic_garbage() -> None:
    """Cycles, and survivors enough (a third of the heap) for CPython to collect the oldest generation."""
    survivors: list[list[Any]] = []
    for _ in range(len(gc.get_objects()) // 3 + 300_000):
        cycle: list[Any] = []
        cycle.append(cycle)
        survivors.append([])


def test_a_held_pass_runs_young_collections_only_and_full_ones_resume_after() -> None:
    held = collections_during(full_collections_held()(cyclic_garbage))
    assert held and 2 not in held, "young collections go on, no full one"
    assert 2 in collections_during(cyclic_garbage), "the same garbage, not held, brings a full collection"


def test_a_serving_process_runs_a_young_collection_per_20000_objects_kept_not_per_700() -> None:
    before = gc.get_threshold()

    def keep(n: int) -> Any:
        return lambda: [[] for _ in range(n)]  # n tracked objects alive until the end

    try:
        gc.collect()
        assert len(collections_during(keep(14_000))) >= 10  # CPython's 700: a young collection per 700
        settle_for_serving()
        assert gc.get_threshold() == SERVING_THRESHOLDS
        gc.collect()
        assert collections_during(keep(14_000)) == []
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
