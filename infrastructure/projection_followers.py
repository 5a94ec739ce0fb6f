"""eventsourcing projections as supervised followers (infrastructure/supervision.py).

eventsourcing's `ProjectionRunner` ends for good on the first error of its subscription or its
projection. `ProjectionFollower.run` does what its processing loop does (subscribe to the
application from the projection's tracking position, process each event with its tracking
object) and raises on error, so the supervisor can start it again: each run subscribes afresh from
the position recorded with the last event processed, and nothing is skipped or applied twice.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.projection import ApplicationSubscription, EventSourcedProjection

from infrastructure.supervision import subscription_stopped_by


def tracking_recorder_of(projection: Any) -> Any:
    """Where a projection records its positions: its view, or (event-sourced) its process recorder."""
    return projection.recorder if isinstance(projection, EventSourcedProjection) else projection.view


class ProjectionFollower:
    """Runs one projection of `source` until stopped; a failed run leaves `make_projection` to build it again.

    `make_projection(previous)` returns the projection for a run: the same one (a view's projection
    holds nothing but the view) or a fresh one after an error (an event-sourced projection keeps
    aggregates in memory; it is closed and rebuilt from the store).
    """

    def __init__(self, name: str, source: Any, make_projection: Callable[[Any], Any]) -> None:
        self.name = name
        self.source = source
        self._make_projection = make_projection
        self.projection = make_projection(None)
        self._failed = False
        self._position: int | None = None
        self._lock = threading.Lock()

    def position(self) -> int | None:
        return self._position

    def run(self, stopping: threading.Event) -> None:
        with self._lock:
            if self._failed:
                self.projection = self._make_projection(self.projection)
                self._failed = False
            projection = self.projection
        try:
            self._follow(projection, stopping)
        except BaseException:
            self._failed = True
            raise

    def _follow(self, projection: Any, stopping: threading.Event) -> None:
        gt = tracking_recorder_of(projection).max_tracking_id(self.source.name)
        if gt is not None:
            self._position = max(self._position or 0, gt)
        subscription = ApplicationSubscription(self.source, gt=gt, topics=projection.topics)
        with subscription_stopped_by(stopping, subscription):
            for domain_event, tracking in subscription:
                projection.process_event(domain_event, tracking)
                self._position = tracking.notification_id

    def close(self) -> None:
        closer = getattr(self.projection, "close", None)
        if callable(closer):
            closer()
