"""What a process is built from (made by infrastructure/bootstrap.py, read by the entry points and the API)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from application.mediatasks import MediaTasks
    from application.ports.blob_store import BlobStore
    from infrastructure.observability.telemetry import Telemetry
    from infrastructure.postgres.views_pointer import ViewsSwitch
    from infrastructure.settings import Settings
    from infrastructure.supervision import Supervisor

logger = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a process needs, built once."""

    settings: Settings
    env: dict[str, str]
    app: MediaTasks
    views: ViewsSwitch
    blobs: BlobStore
    telemetry: Telemetry
    supervisor: Supervisor
    _closers: list[Callable[[], object]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self._closers):
            try:
                close()
            except Exception:  # noqa: BLE001 - closing must go on
                logger.exception("error while closing")
        self._closers.clear()
