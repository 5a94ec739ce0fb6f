"""A service process: runtime + (optionally) projections + the HTTP API."""

from __future__ import annotations

import os
import socket
from typing import Any

from infrastructure.bootstrap import ProjectionRunners, bootstrap, start_inline_dispatcher
from infrastructure.settings import Settings


class ServiceProcess:
    def __init__(self, settings: Settings | None = None, *, run_projections: bool = True,
                 run_dispatcher: bool = True) -> None:
        from infrastructure.api.app import create_api

        self.runtime = bootstrap(settings)
        self.projections = ProjectionRunners(self.runtime.env) if run_projections else None
        if run_dispatcher and self.runtime.settings.dispatch == "inline":
            start_inline_dispatcher(self.runtime, worker_id=f"{socket.gethostname()}:{os.getpid()}")
        self.api = create_api(self.runtime, projections=self.projections)
        self.runtime.telemetry.observe_projection_lag(self.runtime, self.projections)

    def close(self) -> None:
        if self.projections is not None:
            self.projections.stop()
        self.runtime.close()


def create_worker_api() -> Any:
    """For `uvicorn --workers N`: API only; projections run in their own process."""
    return ServiceProcess(run_projections=False, run_dispatcher=False).api
