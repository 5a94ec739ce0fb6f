"""Refunds as compensating events: for each terminal failure, refund the charge exactly once."""

from __future__ import annotations

import time
from functools import singledispatchmethod
from typing import Any
from uuid import UUID

from eventsourcing.application import ProcessingEvent
from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.projection import EventSourcedProjection
from eventsourcing.utils import get_topic
from opentelemetry import metrics

from application.mediatasks import ACCOUNT_SNAPSHOT_INTERVAL
from domain.credits import CreditAccount
from domain.tasks import MediaTask

MAX_CONFLICT_RETRIES = 50

refunds_issued = metrics.get_meter(__name__).create_counter(
    "mediatasks.refunds", unit="{refund}", description="Refunds issued (counted once committed)"
)


class RefundIssuer(EventSourcedProjection[UUID]):
    """Follows MediaTasks and, for each terminal Failed, appends Refunded to the task and to its account.

    It writes to the application it follows (same name, so the same events table); the task's and
    the account's refunds and its tracking position are recorded in one transaction, and the task
    itself refuses a second refund of the same run (optimistic concurrency on the task's version
    settles a race between two issuers, or with the user's retry).
    """

    name = "MediaTasks"
    topics = (get_topic(MediaTask.Failed),)
    snapshotting_intervals = {CreditAccount: ACCOUNT_SNAPSHOT_INTERVAL}
    _refunds_collected = 0

    def process_event(self, domain_event: DomainEventProtocol[UUID], tracking: Tracking) -> None:
        """Retry on optimistic-concurrency conflicts with concurrent writers to the same account."""
        for n in range(MAX_CONFLICT_RETRIES):
            try:
                self._process_and_count(domain_event, tracking)
                return
            except IntegrityError:
                if self.recorder.has_tracking_id(tracking.application_name, tracking.notification_id):
                    return
                time.sleep(min(0.05, 0.002 * (n + 1)))
        self._process_and_count(domain_event, tracking)

    def _process_and_count(self, domain_event: DomainEventProtocol[UUID], tracking: Tracking) -> None:
        self._refunds_collected = 0
        super().process_event(domain_event, tracking)
        if self._refunds_collected:  # committed with the tracking position
            refunds_issued.add(self._refunds_collected)

    @singledispatchmethod
    def policy(self, domain_event: Any, processing_event: ProcessingEvent[UUID]) -> None:
        """Other events need no refund (their positions are still tracked)."""

    @policy.register
    def _(self, domain_event: MediaTask.Failed, processing_event: ProcessingEvent[UUID]) -> None:
        if not domain_event.terminal:
            return
        failed: MediaTask = self.repository.get(domain_event.originator_id, version=domain_event.originator_version)
        task: MediaTask = self.repository.get(domain_event.originator_id)
        first_attempt = failed.charge_attempt
        if first_attempt not in task.refunds_due:
            return  # refunded already
        account: CreditAccount = self.repository.get(CreditAccount.id_for(task.user_id))
        account.refund(task.id, first_attempt, task.refund(first_attempt))
        processing_event.collect_events(task, account)
        self._refunds_collected += 1
