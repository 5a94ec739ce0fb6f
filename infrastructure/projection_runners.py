"""The projection runners: the read model and the refund issuer followed in this process, supervised.

The read model's follower follows the read model the pointer table names (the `read-model-pointer`
follower checks it), so that `mediatasks audit rebuild` can switch read models under a running service.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from eventsourcing.persistence import InfrastructureFactory

from application.mediatasks import MediaTasks
from infrastructure.postgres.tables import construct_views, named_env
from infrastructure.postgres.views_pointer import POINTER_CHECK_SECONDS, active_views_name
from infrastructure.projection_followers import ProjectionFollower
from infrastructure.supervision import Supervisor
from projections.refund_issuer import RefundIssuer
from projections.task_views import TaskViewsProjection

logger = logging.getLogger(__name__)


class ProjectionRunners:
    """Runs the read model and the refund issuer in this process, supervised, until stopped.

    Each is a ProjectionFollower under `supervisor` (else a supervisor of its own): after a database
    error it follows again from its tracking position. With no views name given, the live read
    model's name is read from the pointer table and followed (the `read-model-pointer` follower):
    after `mediatasks audit rebuild` switches it, the read model's follower restarts on the new one.
    """

    def __init__(
        self, env: dict[str, str], views_name: str | None = None, *, refunds: bool = True, supervisor: Any = None
    ) -> None:
        # The followers share one source application with a few pools; the read model writes a page of events per transaction.
        self.env = env = {**env, "POSTGRES_POOL_SIZE": "2", "POSTGRES_MAX_OVERFLOW": "4"}
        self.supervisor = supervisor or Supervisor()
        self._owns_supervisor = supervisor is None
        self._lock = threading.Lock()
        self._factory = InfrastructureFactory.construct(
            env=named_env("MediaTasks", {**env, "POSTGRES_POOL_SIZE": "1", "POSTGRES_MAX_OVERFLOW": "1"})
        )
        self.source = MediaTasks(env=env)
        self.views_name = views_name or active_views_name(self._factory.datastore)  # type: ignore[attr-defined]  # the PostgreSQL factory's datastore
        self.views_runner = self._views_follower(self.views_name)
        self.supervisor.add(self.views_runner)
        self.refunds_runner: Any = None
        if refunds:

            def refund_issuer(previous: Any) -> Any:
                if previous is not None:
                    previous.close()
                return RefundIssuer(env=env)

            self.refunds_runner = ProjectionFollower(REFUNDS_FOLLOWER, self.source, refund_issuer)
            self.supervisor.add(self.refunds_runner)
        self._pointer: Any = None
        if views_name is None:
            self._pointer = ReadModelPointerFollower(self)
            self.supervisor.add(self._pointer)
        self._stopped = threading.Event()

    def _views_follower(self, views_name: str) -> Any:
        projection_class = TaskViewsProjection
        if views_name != TaskViewsProjection.name:
            projection_class = type(f"TaskViewsProjection_{views_name}", (TaskViewsProjection,), {"name": views_name})
        view = construct_views(self.env, views_name)
        projection = projection_class(view=view)
        return ProjectionFollower(VIEWS_FOLLOWER, self.source, lambda _: projection)

    def switch_views(self, name: str) -> None:
        """Follow the read model named `name` instead of the current one."""
        logger.info("read model switched", extra={"views": name, "previous": self.views_name})
        with self._lock:
            new = self._views_follower(name)
            self.supervisor.remove(VIEWS_FOLLOWER)
            old, self.views_runner, self.views_name = self.views_runner, new, name
            self.supervisor.add(new)
        old.projection.view.datastore.close()

    @property
    def runners(self) -> list[Any]:
        return [r for r in (self.views_runner, self.refunds_runner) if r is not None]

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.runners] + ([self._pointer.name] if self._pointer is not None else [])

    @property
    def views(self) -> Any:
        return self.views_runner.projection.view

    def wait_for(self, notification_id: int | None, timeout: float = 5.0) -> None:
        """Block until the read model has processed `notification_id` (TimeoutError after `timeout`)."""
        if notification_id is None:
            return
        self.views.wait(self.source.name, notification_id, timeout=timeout)

    def check(self) -> None:
        """Raise if any of these followers has failed since it started (it is being restarted)."""
        for status in self.supervisor.statuses():
            if status.name in self.names and status.restarts:
                raise RuntimeError(f"{status.name} failed {status.restarts} times: {status.last_error}")

    def run_forever(self) -> None:
        """Block until stop() (the followers run and restart in the supervisor's threads)."""
        self._stopped.wait()

    def stop(self) -> None:
        self._stopped.set()
        if self._owns_supervisor:
            self.supervisor.stop()
        else:
            for name in self.names:
                self.supervisor.remove(name)
        for runner in self.runners:
            runner.close()
        self.views.datastore.close()
        self.source.close()
        self._factory.close()


VIEWS_FOLLOWER = "read-model"
REFUNDS_FOLLOWER = "refund-issuer"


class ReadModelPointerFollower:
    """Checks the read-model pointer every POINTER_CHECK_SECONDS; a switch restarts the read model's follower."""

    name = "read-model-pointer"

    def __init__(self, runners: ProjectionRunners) -> None:
        self.runners = runners

    def run(self, stopping: threading.Event) -> None:
        while not stopping.wait(POINTER_CHECK_SECONDS):
            name = active_views_name(self.runners._factory.datastore)  # type: ignore[attr-defined]  # the PostgreSQL factory's datastore
            if name != self.runners.views_name:
                self.runners.switch_views(name)
