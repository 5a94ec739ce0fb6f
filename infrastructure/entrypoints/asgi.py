"""An API process: runtime + the HTTP API (+ the inline dispatcher); the followers run elsewhere."""

from __future__ import annotations

import os
import socket
from typing import Any

from infrastructure.bootstrap import bootstrap, build_qstash_deliveries, start_inline_dispatcher
from infrastructure.collector import settle_for_serving
from infrastructure.settings import Settings


class ServiceProcess:
    """The request path of `serve`: the projections, refund issuer and other log followers run in
    the projections process (infrastructure/projections_process.py), whose /readyz this API's asks."""

    def __init__(self, settings: Settings | None = None, *, run_dispatcher: bool = True) -> None:
        from infrastructure.api.app import create_api, include_qstash_deliveries

        self.runtime = bootstrap(settings)
        if run_dispatcher and self.runtime.settings.dispatch == "inline":
            start_inline_dispatcher(self.runtime, worker_id=worker_id())
        self.api = create_api(self.runtime)
        # The delivery endpoint runs attempts, so --no-dispatch leaves it out.
        if run_dispatcher and self.runtime.settings.dispatch == "qstash":
            include_qstash_deliveries(self.api, build_qstash_deliveries(self.runtime, worker_id()))
        self.runtime.telemetry.observe_projection_lag(self.runtime)
        # What start-up made (modules, the app, the runtime: most of the heap) leaves the collector's
        # generations: a full collection under load walks only what requests made since.
        settle_for_serving()

    def close(self) -> None:
        self.runtime.close()


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def create_worker_api() -> Any:
    """For `uvicorn --workers N`: the API only; the projections process runs the followers (and attempts)."""
    return ServiceProcess(run_dispatcher=False).api
