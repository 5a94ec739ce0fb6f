"""A submission whose COMMIT lost its answer is resolved by re-reading the task before answering."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError

from application.mediatasks import MediaTasks

URL = "https://www.tiktok.com/@fake/video/"


@pytest.fixture
def app(store_env: dict[str, str]) -> Iterator[MediaTasks]:
    application = MediaTasks(env=store_env)
    application.create_user("u", 10)
    yield application
    application.close()


def losing_the_answer(app: MediaTasks, *, commits: bool) -> None:
    """The next save commits (or not) and then its connection is lost, as during COMMIT."""
    real_save = app.save

    def save(*aggregates: Any, **kwargs: Any) -> Any:
        app.save = real_save  # type: ignore[method-assign]
        if commits:
            real_save(*aggregates, **kwargs)
        raise OperationalError("server closed the connection unexpectedly")

    app.save = save  # type: ignore[method-assign]


@pytest.mark.parametrize("idempotency_key", [None, "k-1"])
def test_a_commit_that_happened_is_answered_as_accepted_and_charged_once(
    app: MediaTasks, idempotency_key: str | None
) -> None:
    losing_the_answer(app, commits=True)
    submission = app.submit("u", URL + "1", "subtitles", idempotency_key=idempotency_key)
    assert submission.created
    assert app.get_task(submission.task_id).status == "queued"
    assert app.get_account("u").balance == 9


def test_a_commit_that_did_not_happen_is_an_error_and_charges_nothing(app: MediaTasks) -> None:
    losing_the_answer(app, commits=False)
    with pytest.raises(OperationalError):
        app.submit("u", URL + "2", "subtitles", idempotency_key="k-2")
    assert app.get_account("u").balance == 10
    again = app.submit("u", URL + "2", "subtitles", idempotency_key="k-2")  # the client's retry
    assert again.created and app.get_account("u").balance == 9
