"""Schemathesis against /openapi.json: no 5xx, every response matches the declared schema.

One schemathesis run per path: on the whole schema at once its test generation is ~20× slower.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import RunningService

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


@pytest.mark.slow
def test_every_route_keeps_its_contract(service: RunningService) -> None:
    user_key = service.new_user(1000)[1]
    admin_token = service.admin["Authorization"].removeprefix("Bearer ")
    paths = httpx.get(service.url + "/openapi.json").json()["paths"]
    assert len(paths) >= 9
    schemathesis = Path(sys.executable).with_name("schemathesis")
    failures = []
    for path in paths:
        token = admin_token if path.startswith("/v1/admin/") or path == "/metrics" else user_key
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
            failures.append(f"{path}:\n{result.stdout[-4000:]}{result.stderr[-1000:]}")
    assert not failures, "\n\n".join(failures)
