"""Every use case of MediaTasks and every branch of TaskPipeline._attempt, written once.

Run on eventsourcing's POPO persistence with fakes of the ports (tests/unit/test_use_cases.py, no
PostgreSQL) and on PostgreSQL (tests/integration/test_use_cases_postgres.py), the way eventsourcing's
searchablecontent example runs one suite on two stores. A subclass provides `make_app()`.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any
from uuid import uuid4

import pytest

from application.mediatasks import MediaTasks
from application.pipeline import PipelineLimits, TaskPipeline
from application.ports.errors import PermanentMediaError, TransientMediaError
from domain.errors import (
    IdempotencyKeyReused,
    InsufficientCredits,
    InvalidOutputType,
    StaleAttempt,
    TaskNotFound,
    TaskNotRetryable,
    UnsupportedUrl,
    UserAlreadyExists,
    UserNotFound,
)
from domain.vocabulary import AttemptOutcome, TaskStatus
from infrastructure.subtitles import parse_track
from tests.support.fakes import FakeFetcher, FakeProvider, MemoryBlobs, MemoryMetadataCache, media_info

URL = "https://www.tiktok.com/@scout2015/video/6718335390845095173"


class MediaTasksUseCases:
    """The suite; `make_app()` gives a fresh MediaTasks on the store under test."""

    def make_app(self) -> MediaTasks:
        raise NotImplementedError

    @pytest.fixture
    def app(self) -> Any:
        app = self.make_app()
        yield app
        app.close()

    def user(self, app: MediaTasks, credits: int = 10) -> str:
        user_id = f"u-{uuid4().hex[:12]}"
        app.create_user(user_id, credits)
        return user_id

    def pipeline(self, app: MediaTasks, **ports: Any) -> TaskPipeline:
        return TaskPipeline(
            app,
            provider=ports.get("provider") or FakeProvider(),
            fetcher=ports.get("fetcher") or FakeFetcher(),
            blobs=ports.get("blobs") or MemoryBlobs(),
            cache=ports.get("cache") or MemoryMetadataCache(),
            parse_subtitles=ports.get("parse_subtitles") or parse_track,
            limits=ports.get("limits") or PipelineLimits(max_video_bytes=1000, heartbeat_seconds=60),
            worker_id="w1",
        )

    # Users, keys and credits -------------------------------------------------------

    def test_users_keys_and_credits(self, app: MediaTasks) -> None:
        new = app.create_user("alice-" + uuid4().hex[:6], 5)
        assert new.balance == 5
        assert app.authenticate(new.api_key) == new.user_id
        assert app.authenticate(new.api_key + "x") is None
        second_key = app.issue_api_key(new.user_id)
        assert app.authenticate(second_key) == new.user_id
        with pytest.raises(UserAlreadyExists):
            app.create_user(new.user_id)
        balance, _ = app.grant_credits(new.user_id, 7, "top-up")
        assert balance == 12 == app.get_account(new.user_id).balance
        with pytest.raises(UserNotFound):
            app.get_account("nobody-" + uuid4().hex[:6])

    # Submissions -------------------------------------------------------------------

    def test_submit_charges_once_per_idempotency_key(self, app: MediaTasks) -> None:
        user = self.user(app, 10)
        first = app.submit(user, URL, "video_and_subtitles", ["en"], idempotency_key="k1")
        again = app.submit(user, URL, "video_and_subtitles", ["en"], idempotency_key="k1")
        assert first.created and not again.created
        assert first.task_id == again.task_id and first.credits_charged == 3
        assert app.get_account(user).balance == 7
        with pytest.raises(IdempotencyKeyReused):
            app.submit(user, URL, "video", None, idempotency_key="k1")
        task = app.get_task(first.task_id, user)
        assert task.status == TaskStatus.QUEUED
        with pytest.raises(TaskNotFound):
            app.get_task(first.task_id, "someone-else")

    def test_submit_refusals_write_nothing(self, app: MediaTasks) -> None:
        user = self.user(app, 1)
        with pytest.raises(InsufficientCredits):
            app.submit(user, URL, "video_and_subtitles")
        with pytest.raises(InvalidOutputType):
            app.submit(user, URL, "music")
        with pytest.raises(UnsupportedUrl):
            app.submit(user, "https://example.com/video", "video")
        assert app.get_account(user).balance == 1

    def test_history_and_state_as_of(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "subtitles")
        history = app.task_history(sub.task_id, user)
        assert [h.type for h in history] == ["Started"]
        assert app.task_at(sub.task_id, datetime.now(timezone.utc)).status == TaskStatus.QUEUED
        assert app.task_at(sub.task_id, datetime(2000, 1, 1, tzinfo=timezone.utc)) is None

    # Attempts: begin, progress, complete, fail, retry --------------------------------

    def test_begin_attempt_decides_from_history(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "subtitles")
        first = app.begin_attempt(sub.task_id, "w1")
        assert first.outcome == AttemptOutcome.STARTED and first.attempt == 1
        busy = app.begin_attempt(sub.task_id, "w2")
        assert busy.outcome == AttemptOutcome.ALREADY_PROCESSING and busy.lease_remaining > 0
        app.report_progress(sub.task_id, 1, "metadata", 20)
        with pytest.raises(StaleAttempt):
            app.report_progress(sub.task_id, 2, "metadata", 30)
        app.complete(sub.task_id, 1, {"subtitles": []})
        assert app.begin_attempt(sub.task_id, "w3").outcome == AttemptOutcome.ALREADY_COMPLETED
        assert app.get_task(sub.task_id).status == TaskStatus.EXTRACTED

    def test_a_stale_lease_is_taken_over(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "subtitles")
        app.begin_attempt(sub.task_id, "w1")
        later = datetime.now(timezone.utc) + app.lease + timedelta(seconds=5)
        app.clock = lambda: later  # type: ignore[method-assign]  # the app's clock, moved past the lease
        taken = app.begin_attempt(sub.task_id, "w2")
        assert taken.outcome == AttemptOutcome.RETRYING and taken.attempt == 2
        assert taken.outcome is not TaskStatus.RETRYING

    def test_failures_retry_until_terminal_then_retry_task_charges_again(self, app: MediaTasks) -> None:
        user = self.user(app, 10)
        sub = app.submit(user, URL, "subtitles")
        for attempt in (1, 2):
            assert app.begin_attempt(sub.task_id, "w").attempt == attempt
            assert app.fail(sub.task_id, attempt, "timeout", "slow", True, {}) is False
            assert app.get_task(sub.task_id).status == TaskStatus.FAILED
        app.begin_attempt(sub.task_id, "w")
        assert app.fail(sub.task_id, 3, "timeout", "slow", True, {}) is True
        assert app.begin_attempt(sub.task_id, "w").outcome == AttemptOutcome.NOT_RETRYABLE
        retried = app.retry_task(user, sub.task_id)
        assert retried.credits_charged == 1 and app.get_account(user).balance == 8
        with pytest.raises(TaskNotRetryable):
            app.retry_task(user, sub.task_id)

    def test_last_delivery_makes_a_retryable_failure_terminal(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "subtitles")
        app.begin_attempt(sub.task_id, "w")
        assert app.fail(sub.task_id, 1, "timeout", "slow", True, {}, last_delivery=True) is True

    # TaskPipeline._attempt, branch by branch -------------------------------------------

    def run(self, app: MediaTasks, output_type: str = "video_and_subtitles", **ports: Any) -> Any:
        user = self.user(app)
        sub = app.submit(user, URL, output_type, ["en"])
        return self.pipeline(app, **ports).run(sub.task_id), app.get_task(sub.task_id)

    @pytest.mark.parametrize("output_type", ["video", "subtitles", "video_and_subtitles"])
    def test_pipeline_extracts_what_was_asked(self, app: MediaTasks, output_type: str) -> None:
        blobs = MemoryBlobs()
        outcome, task = self.run(app, output_type, blobs=blobs)
        assert outcome.outcome == AttemptOutcome.EXTRACTED and task.status == TaskStatus.EXTRACTED
        assert ("video" in task.result) == (output_type != "subtitles")
        assert ("subtitles" in task.result) == (output_type != "video")
        assert len(blobs.blobs) == {"video": 1, "subtitles": 1, "video_and_subtitles": 2}[output_type]

    def test_pipeline_uses_the_metadata_cache(self, app: MediaTasks) -> None:
        provider, cache = FakeProvider(), MemoryMetadataCache()
        self.run(app, provider=provider, cache=cache)
        outcome, _ = self.run(app, provider=provider, cache=cache)
        assert outcome.outcome == AttemptOutcome.EXTRACTED and provider.calls == 1

    def test_a_failure_after_a_cache_hit_invalidates_the_entry(self, app: MediaTasks) -> None:
        cache = MemoryMetadataCache()
        self.run(app, cache=cache)
        outcome, _ = self.run(app, cache=cache, fetcher=FakeFetcher(error=PermanentMediaError("media_not_found", "x")))
        assert outcome.outcome == AttemptOutcome.FAILED and cache.invalidated

    @pytest.mark.parametrize(
        ("ports", "code"),
        [
            ({"provider": FakeProvider(error=PermanentMediaError("media_private", "private"))}, "media_private"),
            ({"provider": FakeProvider(info=media_info(video=False))}, "no_video"),
            ({"provider": FakeProvider(info=media_info(size=10**6))}, "too_large"),
            ({"fetcher": FakeFetcher(content_type="text/html")}, "unsupported_content"),
            ({"provider": FakeProvider(info=media_info(subtitles=()))}, "no_subtitles"),
        ],
    )
    def test_permanent_failures_are_terminal_and_discard_blobs(self, app: MediaTasks, ports: Any, code: str) -> None:
        blobs = MemoryBlobs()
        outcome, task = self.run(app, blobs=blobs, **ports)
        assert (outcome.outcome, outcome.error_code, outcome.terminal) == (AttemptOutcome.FAILED, code, True)
        assert task.status == TaskStatus.FAILED and task.terminal_failure
        assert blobs.blobs == {}

    def test_empty_subtitle_tracks_are_no_subtitles(self, app: MediaTasks) -> None:
        fetcher = FakeFetcher()
        fetcher.bodies[next(iter(k for k in fetcher.bodies if k.endswith(".vtt")))] = b"WEBVTT\n\n"
        outcome, _ = self.run(app, "subtitles", fetcher=fetcher)
        assert outcome.error_code == "no_subtitles"

    def test_a_transient_failure_schedules_a_retry(self, app: MediaTasks) -> None:
        error = TransientMediaError("rate_limited", "slow down", retry_after=7)
        outcome, task = self.run(app, provider=FakeProvider(error=error))
        assert outcome.outcome == AttemptOutcome.RETRY_SCHEDULED and outcome.retry_after == 7
        assert task.status == TaskStatus.FAILED and not task.terminal_failure

    def test_a_transient_failure_on_the_last_delivery_is_terminal(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "video")
        error = TransientMediaError("timeout", "slow")
        outcome = self.pipeline(app, provider=FakeProvider(error=error)).run(sub.task_id, last_delivery=True)
        assert outcome.outcome == AttemptOutcome.FAILED and outcome.terminal

    def test_an_unexpected_error_is_an_internal_transient_failure(self, app: MediaTasks) -> None:
        outcome, _ = self.run(app, provider=FakeProvider(error=RuntimeError("bug")))
        assert (outcome.outcome, outcome.error_code) == (AttemptOutcome.RETRY_SCHEDULED, "internal_error")

    def test_an_attempt_that_lost_its_lease_records_nothing_more(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "video")
        pipeline = self.pipeline(app)
        original = app.complete

        def taken_over(task_id: Any, attempt: int, result: Any) -> Any:
            raise StaleAttempt("another attempt holds the task")

        app.complete = taken_over  # type: ignore[method-assign]  # a rival took the task before completing
        try:
            outcome = pipeline.run(sub.task_id)
        finally:
            app.complete = original  # type: ignore[method-assign]
        assert outcome.outcome == AttemptOutcome.LEASE_LOST
        assert pipeline.blobs.blobs == {}  # type: ignore[attr-defined]  # the fake's dict

    def test_a_failure_that_lost_its_lease_is_lease_lost(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "video")
        original = app.fail

        def taken_over(*args: Any, **kwargs: Any) -> Any:
            raise StaleAttempt("another attempt holds the task")

        app.fail = taken_over  # type: ignore[method-assign]  # a rival took the task before the failure
        try:
            error = PermanentMediaError("media_not_found", "gone")
            outcome = self.pipeline(app, provider=FakeProvider(error=error)).run(sub.task_id)
        finally:
            app.fail = original  # type: ignore[method-assign]
        assert (outcome.outcome, outcome.error_code) == (AttemptOutcome.LEASE_LOST, "media_not_found")

    def video_progress(self, app: MediaTasks, progress_interval_seconds: float) -> list[int]:
        """The progress of each `video` event of a task whose 800-byte video streams in 4-byte chunks."""
        user = self.user(app)
        sub = app.submit(user, URL, "video")
        fetcher = FakeFetcher()
        fetcher.bodies[next(url for url in fetcher.bodies if not url.endswith(".vtt"))] = b"\x01" * 800
        limits = PipelineLimits(
            max_video_bytes=1000, heartbeat_seconds=60, progress_interval_seconds=progress_interval_seconds
        )
        pipeline = self.pipeline(app, fetcher=fetcher, provider=FakeProvider(info=media_info(size=800)), limits=limits)
        assert pipeline.run(sub.task_id).outcome == AttemptOutcome.EXTRACTED
        history = app.task_history(sub.task_id, user)
        return [h.data["progress"] for h in history if h.type == "Processing" and h.data["stage"] == "video"]

    def test_progress_while_streaming_comes_every_5_points(self, app: MediaTasks) -> None:
        assert self.video_progress(app, progress_interval_seconds=0) == [30, 35, 40, 45, 50, 55, 60, 70]

    def test_progress_while_streaming_waits_for_the_interval(self, app: MediaTasks) -> None:
        # with the whole download inside one interval, only its start (30) and "stored" (70) are recorded
        assert self.video_progress(app, progress_interval_seconds=3600) == [30, 70]

    def test_a_delivery_that_may_not_start_runs_nothing(self, app: MediaTasks) -> None:
        user = self.user(app)
        sub = app.submit(user, URL, "video")
        provider = FakeProvider()
        pipeline = self.pipeline(app, provider=provider)
        assert pipeline.run(sub.task_id).outcome == AttemptOutcome.EXTRACTED
        assert pipeline.run(sub.task_id).outcome == AttemptOutcome.ALREADY_COMPLETED
        assert provider.calls == 1
