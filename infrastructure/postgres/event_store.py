"""eventsourcing's PostgreSQL persistence, with group commit and subscriptions that also catch up.

Inserts go through infrastructure/postgres/group_commit.py unless GROUP_COMMIT=off. The library's LISTEN/NOTIFY subscription waits for a notification before it reads again; if a
NOTIFY is lost (a dropped listening connection, a restart), it would stall until the next write.
Here every subscription also wakes itself every CATCH_UP_SECONDS and reads what is new.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from eventsourcing.persistence import ApplicationRecorder, ProcessRecorder, Subscription
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresFactory,
    PostgresProcessRecorder,
    PostgresSubscription,
)
from eventsourcing.utils import Environment, EnvType, get_topic

from infrastructure.postgres.events_after import EventsAfterReads
from infrastructure.postgres.group_commit import DEFAULT_MAX_BATCH_EVENTS, GroupCommitInserts
from infrastructure.postgres.topic_index import TopicIndexReads

DEFAULT_CATCH_UP_SECONDS = 1.0


class CatchUpSubscription(PostgresSubscription):
    def __init__(
        self,
        recorder: PostgresApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
        catch_up_seconds: float = DEFAULT_CATCH_UP_SECONDS,
    ) -> None:
        self._catch_up_seconds = catch_up_seconds
        self._stopped = threading.Event()
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        self._catch_up_thread = threading.Thread(target=self._catch_up, daemon=True)
        self._catch_up_thread.start()

    def _catch_up(self) -> None:
        while not self._stopped.wait(self._catch_up_seconds):
            self._has_been_notified.set()

    def stop(self) -> None:
        self._stopped.set()
        super().stop()


class CatchUpSubscriptions(TopicIndexReads):
    """Mixin for recorders: subscriptions that do not depend on every NOTIFY arriving (and whose
    topic-filtered reads use the topic index)."""

    catch_up_seconds = DEFAULT_CATCH_UP_SECONDS

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        assert isinstance(self, PostgresApplicationRecorder)
        return CatchUpSubscription(recorder=self, gt=gt, topics=topics, catch_up_seconds=self.catch_up_seconds)


class MediaTasksApplicationRecorder(CatchUpSubscriptions, EventsAfterReads, PostgresApplicationRecorder):
    """One insert, one transaction (eventsourcing's own behaviour): GROUP_COMMIT=off."""


class MediaTasksProcessRecorder(CatchUpSubscriptions, PostgresProcessRecorder):
    """One insert, one transaction (eventsourcing's own behaviour): GROUP_COMMIT=off."""


class GroupCommitApplicationRecorder(GroupCommitInserts, MediaTasksApplicationRecorder):
    """Concurrent inserts share one transaction (infrastructure/postgres/group_commit.py): GROUP_COMMIT=on."""


class GroupCommitProcessRecorder(GroupCommitInserts, MediaTasksProcessRecorder):
    """Concurrent inserts (with their tracking records) share one transaction: GROUP_COMMIT=on."""


class MediaTasksPostgresFactory(PostgresFactory):
    """eventsourcing's PostgreSQL factory; GROUP_COMMIT (on|off, default on) picks the recorders."""

    application_recorder_class = GroupCommitApplicationRecorder
    process_recorder_class = GroupCommitProcessRecorder

    def __init__(self, env: Environment | EnvType | None) -> None:
        super().__init__(env)
        group_commit = (self.env.get("GROUP_COMMIT") or "on").strip().lower()
        if group_commit not in ("on", "off"):
            raise ValueError(f"GROUP_COMMIT must be 'on' or 'off', not {group_commit!r}")
        if group_commit == "off":
            self.env.setdefault(self.APPLICATION_RECORDER_TOPIC, get_topic(MediaTasksApplicationRecorder))
            self.env.setdefault(self.PROCESS_RECORDER_TOPIC, get_topic(MediaTasksProcessRecorder))
        self.max_batch_events = int(self.env.get("GROUP_COMMIT_MAX_EVENTS") or DEFAULT_MAX_BATCH_EVENTS)

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        recorder.catch_up_seconds = float(self.env.get("CATCH_UP_SECONDS") or DEFAULT_CATCH_UP_SECONDS)  # type: ignore[attr-defined]  # set on our recorder subclasses
        recorder.max_batch_events = self.max_batch_events  # type: ignore[attr-defined]  # set on our recorder subclasses
        return recorder

    def process_recorder(self) -> ProcessRecorder:
        recorder = super().process_recorder()
        recorder.max_batch_events = self.max_batch_events  # type: ignore[attr-defined]  # set on our recorder subclasses
        return recorder
