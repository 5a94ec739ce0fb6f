"""eventsourcing's PostgreSQL persistence, with subscriptions that also catch up periodically.

The library's LISTEN/NOTIFY subscription waits for a notification before it reads again; if a
NOTIFY is lost (a dropped listening connection, a restart), it would stall until the next write.
Here every subscription also wakes itself every CATCH_UP_SECONDS and reads what is new.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from eventsourcing.persistence import ApplicationRecorder, Subscription
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresFactory,
    PostgresProcessRecorder,
    PostgresSubscription,
)

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


class CatchUpSubscriptions:
    """Mixin for recorders: subscriptions that do not depend on every NOTIFY arriving."""

    catch_up_seconds = DEFAULT_CATCH_UP_SECONDS

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> Subscription[ApplicationRecorder]:
        assert isinstance(self, PostgresApplicationRecorder)
        return CatchUpSubscription(recorder=self, gt=gt, topics=topics, catch_up_seconds=self.catch_up_seconds)


class MediaTasksApplicationRecorder(CatchUpSubscriptions, PostgresApplicationRecorder):
    pass


class MediaTasksProcessRecorder(CatchUpSubscriptions, PostgresProcessRecorder):
    pass


class MediaTasksPostgresFactory(PostgresFactory):
    application_recorder_class = MediaTasksApplicationRecorder
    process_recorder_class = MediaTasksProcessRecorder

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        recorder.catch_up_seconds = float(self.env.get("CATCH_UP_SECONDS") or DEFAULT_CATCH_UP_SECONDS)  # type: ignore[attr-defined]
        return recorder
