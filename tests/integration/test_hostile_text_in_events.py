"""Events holding text PostgreSQL refuses (NUL, NaN in JSON), written straight into the store past every
check, are projected cleaned, and the read model keeps following the events after them."""

from __future__ import annotations

import pytest

from application.mediatasks import MediaTasks
from domain.credits import CreditAccount
from domain.errors import InvalidText
from domain.tasks import MediaTask
from infrastructure.projection_runners import ProjectionRunners

URL = "https://x.com/someone/status/1790000000000000000"


def test_events_with_nul_and_nan_do_not_stop_the_read_model(app: MediaTasks, runners: ProjectionRunners) -> None:
    app.create_user("nia", 10)
    account: CreditAccount = app.repository.get(CreditAccount.id_for("nia"))
    account._granted(amount=1, reason="nul\x00reason\x1b")  # the recording method: no checks
    app.save(account)
    task_id = app.submit("nia", URL, "video", idempotency_key="k1").task_id
    app.begin_attempt(task_id, "w")
    task: MediaTask = app.repository.get(task_id)
    task._processed(
        attempt=1,
        stage="metadata",
        progress=20,
        details={"title": "a\x00title", "timings": {"n\x00": float("nan"), "inf": float("inf")}},
    )
    task._failed(
        attempt=1,
        code="odd",
        message="provider said \x00",
        retryable=True,
        terminal=False,
        context={"\x00key": ["\x00"]},
    )
    app.save(task)
    app.grant_credits("nia", 2, "after the hostile events")

    runners.wait_for(app.recorder.max_notification_id(), timeout=20)
    runners.check()

    view = runners.views.get_task(task_id)
    assert view is not None
    assert view.title == "a\ufffdtitle"
    assert view.status == "retrying"
    assert view.error is not None and view.error["message"] == "provider said \ufffd"
    assert view.timings == {"n\ufffd": None, "inf": None}
    reasons = [entry.reason for entry in runners.views.ledger("nia") if entry.kind == "grant"]
    assert reasons == ["after the hostile events", "nul\ufffdreason\ufffd", "initial grant"]
    balance = runners.views.get_account("nia")
    assert balance is not None and balance.balance == 10 + 1 + 2 - 2


@pytest.mark.parametrize("reason", ["nul\x00", "bell\x07", "esc\x1b[31m", "del\x7f", "lone \ud800 surrogate"])
def test_a_grant_reason_with_control_characters_is_refused(app: MediaTasks, reason: str) -> None:
    app.create_user("ola", 1)
    with pytest.raises(InvalidText) as refused:
        app.grant_credits("ola", 1, reason)
    assert refused.value.code == "invalid_text"
    assert app.get_account("ola").balance == 1


def test_a_grant_reason_may_hold_tabs_and_line_breaks(app: MediaTasks) -> None:
    app.create_user("pia", 1)
    balance, _ = app.grant_credits("pia", 1, "line one\r\n\tline two")
    assert balance == 2
