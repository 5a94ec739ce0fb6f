"""eventsourcing projections as supervised followers (infrastructure/supervision.py).

eventsourcing's `ProjectionRunner` ends for good on the first error of its subscription or its
projection. `ProjectionFollower.run` does what its processing loop does (subscribe to the
application from the projection's tracking position, process each event with its tracking
object) and raises on error, so the supervisor can start it again: each run subscribes afresh from
the position recorded with the last event processed, and nothing is skipped or applied twice.

A projection whose view can write a page of events in one transaction (`page(first, last)`: the
PostgreSQL read model) is given the events the subscription has read in one pull, up to PAGE_EVENTS,
together: one transaction and one tracking write per page instead of per event. A page a rival
runner recorded part of is applied again event by event (each dropped where the view has it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from eventsourcing.persistence import IntegrityError, Tracking
from eventsourcing.projection import ApplicationSubscription, EventSourcedProjection

from infrastructure.supervision import subscription_stopped_by

PAGE_EVENTS = 500  # the subscription's own page (eventsourcing's ListenNotifySubscription reads 500)


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
        page_of = getattr(getattr(projection, "view", None), "page", None)
        with subscription_stopped_by(stopping, subscription):
            if page_of is None:
                for domain_event, tracking in subscription:
                    projection.process_event(domain_event, tracking)
                    self._position = tracking.notification_id
                return
            page: list[tuple[Any, Tracking]] = []
            for domain_event, tracking in subscription:
                page.append((domain_event, tracking))
                if len(page) < PAGE_EVENTS and read_ahead(subscription):
                    continue
                self._process_page(projection, page_of, page)
                self._position = tracking.notification_id
                page = []

    @staticmethod
    def _process_page(projection: Any, page_of: Callable[[Tracking, Tracking], Any], page: list[Any]) -> None:
        try:
            with page_of(page[0][1], page[-1][1]):
                for domain_event, tracking in page:
                    projection.process_event(domain_event, tracking)
        except IntegrityError:  # a rival recorded some of them: one by one, each dropped if recorded
            for domain_event, tracking in page:
                projection.process_event(domain_event, tracking)

    def close(self) -> None:
        closer = getattr(self.projection, "close", None)
        if callable(closer):
            closer()


def read_ahead(subscription: ApplicationSubscription[Any]) -> bool:
    """Whether the subscription holds events read already (its next one will not wait for the log):
    what eventsourcing 9.5's ListenNotifySubscription keeps of its current pull and the pulls queued."""
    inner = subscription.subscription
    notifications = getattr(inner, "_notifications", None)
    index = getattr(inner, "_notifications_index", None)
    queued = getattr(inner, "_notifications_queue", None)
    if notifications is None or index is None:
        return False
    return index < len(notifications) or (queued is not None and queued.qsize() > 0)
