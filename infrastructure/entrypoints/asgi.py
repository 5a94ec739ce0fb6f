"""A service process: runtime + (optionally) projections + the HTTP API."""

from __future__ import annotations

import os
import socket
from typing import Any

from infrastructure.bootstrap import (
    bootstrap,
    build_qstash_deliveries,
    start_inline_dispatcher,
    start_qstash_publisher,
    start_sealing_follower,
)
from infrastructure.projection_runners import ProjectionRunners
from infrastructure.settings import Settings
from infrastructure.webhooks.wiring import start_webhook_delivery


class ServiceProcess:
    def __init__(
        self, settings: Settings | None = None, *, run_projections: bool = True, run_dispatcher: bool = True
    ) -> None:
        from infrastructure.api.app import create_api, include_qstash_deliveries

        self.runtime = bootstrap(settings)
        self.projections = (
            ProjectionRunners(self.runtime.env, supervisor=self.runtime.supervisor) if run_projections else None
        )
        qstash = self.runtime.settings.dispatch == "qstash"
        if run_dispatcher and self.runtime.settings.dispatch == "inline":
            start_inline_dispatcher(self.runtime, worker_id=worker_id())
        self.api = create_api(self.runtime, projections=self.projections)
        # With QStash the publisher goes with the projections (one such process per database);
        # the delivery endpoint runs attempts, so --no-dispatch leaves it out.
        self.api.state.publisher = start_qstash_publisher(self.runtime) if qstash and run_projections else None
        if qstash and run_dispatcher:
            include_qstash_deliveries(self.api, build_qstash_deliveries(self.runtime, worker_id()))
        if run_projections:  # webhooks go with the projections (one such process per database)
            start_webhook_delivery(self.runtime)
        self.runtime.telemetry.observe_projection_lag(self.runtime, self.projections)
        self.sealer = start_sealing_follower(self.runtime) if run_projections else None

    def close(self) -> None:
        if self.projections is not None:
            self.projections.stop()
        self.runtime.close()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def create_worker_api() -> Any:
    """For `uvicorn --workers N`: API only; projections run in their own process."""
    return ServiceProcess(run_projections=False, run_dispatcher=False).api
