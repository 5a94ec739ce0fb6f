"""Random sequences of commands and duplicate deliveries; the invariants hold after every step, and the
sealed chain (sealed after every step, resuming from its tables) verifies against the history."""

from __future__ import annotations

from uuid import UUID

import pytest
from eventsourcing.persistence import Tracking
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, invariant, rule

from application.audit import HistoryAuditor, replay
from application.mediatasks import MediaTasks
from domain.errors import DomainError
from infrastructure.audit.history import verify_chain
from infrastructure.audit.keys import HmacSigner
from infrastructure.postgres.audit_seal import PostgresSeal, SealingFollower
from infrastructure.settings import Settings
from projections.refund_issuer import RefundIssuer
from tests.support.postgres import SchemaPool

URL = "https://vimeo.com/12345"
USERS = ("ann", "bob")
OUTPUTS = ("subtitles", "video", "video_and_subtitles")


class RefundsInline:
    """The real RefundIssuer, fed each new event right after a step (its runner does this in a thread)."""

    def __init__(self, app: MediaTasks, env: dict[str, str]) -> None:
        self.app = app
        self.issuer = RefundIssuer(env=env)

    def run(self) -> None:
        done = self.issuer.recorder.max_tracking_id(self.app.name) or 0
        for position, event in replay(self.app, after=done):
            self.issuer.process_event(event, Tracking(self.app.name, position))

    def close(self) -> None:
        self.issuer.close()


@pytest.fixture(scope="module")
def machine_env(pg_database: dict[str, str], schema_pool: SchemaPool):
    """Each example's store: an empty schema of the pool, given back (emptied) before the next example's."""
    taken: list[str] = []

    def make() -> dict[str, str]:
        while taken:
            schema_pool.give_back(taken.pop())
        schema = schema_pool.take("p")
        taken.append(schema)
        env = Settings(postgres_schema=schema, postgres_pool_size=2).event_store_env(pg_database)
        env.update(LEASE_SECONDS="0.001", MAX_ATTEMPTS="2")
        return env

    yield make
    while taken:
        schema_pool.give_back(taken.pop())


class CreditsAndLifecycles(RuleBasedStateMachine):
    tasks = Bundle("tasks")
    make_env = None

    @initialize()
    def start(self) -> None:
        env = type(self).make_env()
        self.app = MediaTasks(env=env)
        self.refunds = RefundsInline(self.app, env)
        self.signer = HmacSigner(b"state-machine-audit-key")
        self.sealer = SealingFollower(
            self.app,
            PostgresSeal(self.app.recorder.datastore),
            self.signer,
            checkpoint_events=7,
            checkpoint_seconds=3600,
            page=5,
        )
        for user in USERS:
            self.app.create_user(user, 6)

    def teardown(self) -> None:
        self.refunds.close()
        self.app.close()

    @rule(
        target=tasks,
        user=st.sampled_from(USERS),
        output=st.sampled_from(OUTPUTS),
        key=st.sampled_from(["a", "b", "c", None]),
    )
    def submit(self, user: str, output: str, key: str | None) -> UUID | None:
        try:
            return self.app.submit(user, URL, output, idempotency_key=key).task_id
        except DomainError:
            return None

    @rule(user=st.sampled_from(USERS), amount=st.integers(min_value=-2, max_value=5))
    def grant(self, user: str, amount: int) -> None:
        try:
            self.app.grant_credits(user, amount)
        except DomainError:
            pass

    @rule(task=tasks, duplicates=st.integers(min_value=1, max_value=3))
    def deliver(self, task: UUID | None, duplicates: int) -> None:
        if task is None:
            return
        for _ in range(duplicates):
            self.app.begin_attempt(task, "w")

    @rule(task=tasks, progress=st.integers(min_value=0, max_value=99))
    def progress(self, task: UUID | None, progress: int) -> None:
        self._on_active(task, lambda t: self.app.report_progress(task, t.attempt, "video", progress))

    @rule(task=tasks, retryable=st.booleans())
    def fail(self, task: UUID | None, retryable: bool) -> None:
        self._on_active(
            task, lambda t: self.app.fail(task, t.attempt, "timeout" if retryable else "media_private", "x", retryable)
        )

    @rule(task=tasks)
    def complete(self, task: UUID | None) -> None:
        self._on_active(task, lambda t: self.app.complete(task, t.attempt, {}))

    @rule(task=tasks)
    def retry(self, task: UUID | None) -> None:
        if task is None:
            return
        user = self.app.get_task(task).user_id
        try:
            self.app.retry_task(user, task)
        except DomainError:
            pass

    def _on_active(self, task: UUID | None, act) -> None:
        if task is None:
            return
        current = self.app.get_task(task)
        try:
            act(current)
        except DomainError:
            pass

    @invariant()
    def history_keeps_every_invariant(self) -> None:
        if not hasattr(self, "app"):
            return
        self.refunds.run()
        auditor = HistoryAuditor(refunds_tracked_to=10**12)
        for position, event in replay(self.app):
            auditor.feed(position, event)
        report = auditor.finish()
        assert report.ok, report.violations
        for user in USERS:
            account = self.app.get_account(user)
            assert account.balance >= 0
            folded = next(a for a in auditor.accounts.values() if a.user_id == user)
            assert folded.balance == account.balance

    @invariant()
    def sealed_chain_matches_the_history(self) -> None:
        if not hasattr(self, "app"):
            return
        self.sealer.catch_up()  # resumes from its tables each time, as after a restart
        report = verify_chain(self.app, verifier=self.signer)
        assert report.ok, report.violations
        assert report.chain.linked_to == self.app.recorder.max_notification_id()
        assert report.chain.unsealed == 0


@pytest.mark.slow
def test_random_histories_keep_the_invariants(machine_env) -> None:
    CreditsAndLifecycles.make_env = staticmethod(machine_env)
    runner = CreditsAndLifecycles.TestCase
    runner.settings = settings(
        max_examples=15, stateful_step_count=25, deadline=None, suppress_health_check=list(HealthCheck)
    )
    runner().runTest()
