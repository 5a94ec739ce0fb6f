"""`mediatasks serve` with no configuration at all: embedded PostgreSQL, /healthz answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.service_process import ServiceProcess


@pytest.mark.slow
def test_serve_starts_on_embedded_postgres_and_a_second_process_joins_it(tmp_path: Path) -> None:
    service = ServiceProcess(cwd=tmp_path, log_path=tmp_path / "serve.log")
    try:
        service.wait_ready()
        assert httpx.get(service.url + "/healthz").json() == {"status": "ok"}
        assert (tmp_path / "data" / "pg" / "PG_VERSION").exists()
        # A second process on the same data dir joins the running server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIATASKS_")}
        out = subprocess.run(
            [sys.executable, "-m", "infrastructure.entrypoints.cli", "users", "create", "zed", "--credits", "4"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout)
        assert created["user_id"] == "zed" and created["balance"] == 4 and created["api_key"].startswith("mt_")
        ready = httpx.get(service.url + "/readyz").json()
        assert ready["status"] == "ready" and ready["head"] >= 3
        # The projections process uses serve's server without being one of its handles: killed, it
        # is started again, and the server still stops with serve.
        os.kill(ready["projections_process"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while (again := httpx.get(service.url + "/readyz").json())["projections_process"].get("restarts") != 1:
            assert time.monotonic() < deadline, again
            time.sleep(0.1)
        assert again["status"] == "ready"
    finally:
        assert service.stop() == 0, service.log()
    assert not (tmp_path / "data" / "pg" / "postmaster.pid").exists(), "the embedded server was not stopped"
