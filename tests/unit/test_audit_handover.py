"""verify's two processes: the task checks' state handed from one auditor to another."""

from __future__ import annotations

import pickle
from datetime import timedelta
from typing import Any

import pytest

from application.audit import HistoryAuditor, TaskStatesOverlap
from domain.credits import CreditAccount
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
