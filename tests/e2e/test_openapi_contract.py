"""Schemathesis against /openapi.json: no 5xx, every response matches the declared schema.

One schemathesis run per path: on the whole schema at once its test generation is ~20× slower. Two
runs at a time, each with a user of its own.
"""

from __future__ import annotations

import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningService

RUNS_AT_ONCE = 2
CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
def test_every_route_keeps_its_contract(service: RunningService) -> None:
    admin_token = service.admin["Authorization"].removeprefix("Bearer ")
    paths = httpx.get(service.url + "/openapi.json").json()["paths"]
    assert len(paths) >= 9
    schemathesis = Path(sys.executable).with_name("schemathesis")

    def run(path: str) -> str | None:
        token = admin_token if path.startswith("/v1/admin/") or path == "/metrics" else service.new_user(1000)[1]
        result = subprocess.run(
            [
                str(schemathesis),
                "run",
                service.url + "/openapi.json",
                "--checks",
                CHECKS,
                "-H",
                f"Authorization: Bearer {token}",
                "--max-examples",
                "30",
                "--seed",
                "1",
                "--request-timeout",
                "10",
                "--phases",
                "examples,coverage,fuzzing",
                "--no-color",
                "--include-path-regex",
                "^" + re.escape(path) + "$",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0 or " passed" not in result.stdout:
            return f"{path}:\n{result.stdout[-4000:]}{result.stderr[-1000:]}"
        return None

    with ThreadPoolExecutor(RUNS_AT_ONCE) as runs:
        failures = [failure for failure in runs.map(run, paths) if failure is not None]
    assert not failures, "\n\n".join(failures)
