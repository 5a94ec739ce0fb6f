"""The projections process that `mediatasks serve` starts beside its API, kept running.

`serve` runs the log followers that do not answer requests — the read model, the refund issuer, the
sealing follower, webhook fan-out and sending, the QStash publisher and sweeper — in one child
process, `mediatasks projections`, so that the API process holds only the request path.
`ProjectionsProcess` starts that child, starts it again after it exits (a capped, jittered
backoff, as for a follower; each restart counted in `mediatasks.projections_process.restarts` and
logged with the exit status), and stops it with `serve`. The child serves /readyz on
MEDIATASKS_PROJECTIONS_PORT; the API's /readyz asks it there (infrastructure/api/routes/health.py).

The child ends when its parent does (it watches its parent's pid), so a `serve` killed with
SIGKILL leaves no follower behind.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence

from opentelemetry import metrics

from infrastructure.supervision import HEALTHY_RUN_SECONDS, backoff_delay

logger = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 30.0
PARENT_WATCH_SECONDS = 0.5

process_restarts = metrics.get_meter(__name__).create_counter(
    "mediatasks.projections_process.restarts",
    unit="{restart}",
    description="Times the projections process exited and `serve` started it again",
)


class ProjectionsProcess:
    """Runs `mediatasks projections <args>` as a child and restarts it whenever it exits."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        *,
        backoff_base_seconds: float,
        backoff_cap_seconds: float,
    ) -> None:
        self.args, self.env = list(args), dict(env)
        self.backoff_base_seconds, self.backoff_cap_seconds = backoff_base_seconds, backoff_cap_seconds
        self.restarts = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._watcher = threading.Thread(target=self._keep_running, name="projections-process", daemon=True)

    @property
    def pid(self) -> int | None:
        with self._lock:
            return self._child.pid if self._child is not None else None

    def start(self) -> None:
        self._spawn()
        self._watcher.start()

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int | None:
        """SIGTERM the child (its followers stop at their positions), SIGKILL it after `timeout`."""
        self._stopping.set()
        with self._lock:
            child = self._child
        if child is None:
            return None
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("projections process did not stop in time; killing it", extra={"pid": child.pid})
                child.kill()
                child.wait()
        if self._watcher.is_alive():
            self._watcher.join(timeout)
        return child.returncode

    def _spawn(self) -> None:
        command = [sys.executable, "-m", "infrastructure.entrypoints.cli", "projections", *self.args]
        command += ["--parent-pid", str(os.getpid()), "--restarts", str(self.restarts)]
        with self._lock:
            if self._stopping.is_set():
                return
            # Its logs go to serve's output; in a process group of its own, so a terminal's Ctrl-C reaches
            # serve alone, which then stops it (instead of seeing it exit and starting it again).
            self._child = subprocess.Popen(command, env=self.env, process_group=0)
            logger.info("projections process started", extra={"pid": self._child.pid, "restarts": self.restarts})

    def _keep_running(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            with self._lock:
                child = self._child
            if child is None:
                return
            started = time.monotonic()
            status = child.wait()
            if self._stopping.is_set():
                return
            failures = 1 if time.monotonic() - started >= HEALTHY_RUN_SECONDS else failures + 1
            delay = backoff_delay(failures, self.backoff_base_seconds, self.backoff_cap_seconds)
            self.restarts += 1
            process_restarts.add(1)
            logger.error(
                "projections process exited; starting it again",
                extra={
                    "pid": child.pid,
                    "exit_status": status,
                    "restarts": self.restarts,
                    "backoff_seconds": round(delay, 3),
                },
            )
            if self._stopping.wait(delay):
                return
            self._spawn()


def exit_with_parent(parent_pid: int, stop: threading.Event) -> None:
    """In the child: set `stop` once the process that started it is gone (checked every 0.5 s)."""

    def watch() -> None:
        while not stop.wait(PARENT_WATCH_SECONDS):
            if os.getppid() != parent_pid:
                logger.warning("serve is gone; the projections process stops", extra={"parent_pid": parent_pid})
                stop.set()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def free_loopback_port() -> int:
    """A port nothing listens on now, for the projections process's /readyz (when none is configured)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
