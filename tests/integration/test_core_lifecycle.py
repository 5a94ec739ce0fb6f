"""Submit → attempt → progress → extracted, on real PostgreSQL, with the read model and history."""

from __future__ import annotations

import pytest

from application.mediatasks import MediaTasks
from domain.errors import (
    InsufficientCredits,
    InvalidAmount,
    InvalidTransition,
    InvalidUrl,
    ProgressWentBackwards,
    UnsupportedUrl,
    UserNotFound,
)
from infrastructure.projection_runners import ProjectionRunners

URL = "https://www.tiktok.com/@someone/video/7301"


def event_count(app: MediaTasks) -> int:
    return app.recorder.max_notification_id() or 0


def test_lifecycle_to_extracted(app: MediaTasks, runners: ProjectionRunners) -> None:
    app.create_user("alice", 10)
    sub = app.submit("alice", URL, "video_and_subtitles", ["en"])
    assert sub.created and sub.credits_charged == 3
    decision = app.begin_attempt(sub.task_id, worker_id="w1")
    assert (decision.outcome, decision.attempt) == ("started", 1)
    app.report_progress(sub.task_id, 1, "metadata", 20, {"cache": "miss", "title": "A cat"})
    app.report_progress(sub.task_id, 1, "video", 40)
    app.report_progress(sub.task_id, 1, "video", 40)  # a heartbeat at the same progress is fine
    app.report_progress(sub.task_id, 1, "subtitles", 70)
    app.report_progress(sub.task_id, 1, "upload", 90)
    last = app.complete(
        sub.task_id, 1, {"video": {"uri": "file://x", "size": 3, "sha256": "ab"}, "timings": {"total": 1.5}}
    )

    history = app.task_history(sub.task_id)
    assert [h.type for h in history] == [
        "Started",
        "Downloading",
        "Processing",
        "Processing",
        "Processing",
        "Processing",
        "Processing",
        "Extracted",
    ]
    assert [h.version for h in history] == list(range(1, 9))
    assert [h.data.get("progress") for h in history[1:]] == [10, 20, 40, 40, 70, 90, 100]

    runners.wait_for(last, timeout=10)
    view = runners.views.get_task(sub.task_id)
    assert (view.status, view.progress, view.attempt, view.title) == ("extracted", 100, 1, "A cat")
    assert view.result["video"]["sha256"] == "ab"
    assert runners.views.get_account("alice").balance == 7
    updates = runners.views.task_updates(sub.task_id)
    assert [u.progress for u in updates] == [0, 10, 20, 40, 40, 70, 90, 100]
    kinds = [(e.kind, e.amount, e.balance) for e in runners.views.ledger("alice")]
    assert kinds == [("charge", -3, 7), ("grant", 10, 10)]


def test_bad_input_is_refused_and_writes_nothing(app: MediaTasks) -> None:
    app.create_user("bob", 1)
    before = event_count(app)
    with pytest.raises(UserNotFound):
        app.submit("nobody", URL, "subtitles")
    with pytest.raises(InvalidAmount):
        app.grant_credits("bob", -5)
    with pytest.raises(InvalidUrl):
        app.submit("bob", "not a url", "subtitles")
    with pytest.raises(UnsupportedUrl):
        app.submit("bob", "https://example.com/video.mp4", "subtitles")
    with pytest.raises(InsufficientCredits) as info:
        app.submit("bob", URL, "video")
    assert info.value.details == {"balance": 1, "price": 2}
    assert event_count(app) == before

    sub = app.submit("bob", URL, "subtitles")
    app.begin_attempt(sub.task_id, "w")
    app.report_progress(sub.task_id, 1, "metadata", 30)
    before = event_count(app)
    with pytest.raises(ProgressWentBackwards):
        app.report_progress(sub.task_id, 1, "metadata", 20)
    app.fail(sub.task_id, 1, "media_not_found", "gone", retryable=False)
    before = event_count(app)
    with pytest.raises(InvalidTransition):
        app.complete(sub.task_id, 1, {})
    assert event_count(app) == before


def test_retry_of_failed_task_charges_again_and_refund_follows(app: MediaTasks, runners: ProjectionRunners) -> None:
    app.create_user("carol", 5)
    sub = app.submit("carol", URL, "video")
    app.begin_attempt(sub.task_id, "w")
    assert app.fail(sub.task_id, 1, "media_private", "private", retryable=False) is True
    runners.wait_for(event_count(app), timeout=10)
    _wait_balance(app, "carol", 5)
    again = app.retry_task("carol", sub.task_id)
    assert again.credits_charged == 2
    assert app.get_account("carol").balance == 3
    assert app.begin_attempt(sub.task_id, "w").outcome == "started"
    app.complete(sub.task_id, 2, {})
    assert app.get_account("carol").balance == 3


def _wait_balance(app: MediaTasks, user: str, expected: int, timeout: float = 10) -> None:
    import time

    deadline = time.monotonic() + timeout
    while app.get_account(user).balance != expected:
        assert time.monotonic() < deadline, f"balance {app.get_account(user).balance} != {expected}"
        time.sleep(0.05)
