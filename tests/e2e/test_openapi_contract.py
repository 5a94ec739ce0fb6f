"""Schemathesis against /openapi.json: no 5xx, every response matches the declared schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import RunningService

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"


def run_schemathesis(service: RunningService, token: str, *selection: str) -> None:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    result = subprocess.run(
        [str(schemathesis), "run", service.url + "/openapi.json", "--checks", CHECKS,
         "-H", f"Authorization: Bearer {token}", "--max-examples", "15", "--seed", "1",
         "--request-timeout", "10", "--phases", "examples,coverage,fuzzing", "--no-color", *selection],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


@pytest.mark.slow
def test_user_routes_keep_their_contract(service: RunningService) -> None:
    run_schemathesis(service, service.new_user(1000)[1], "--exclude-path-regex", "^/v1/admin/")


@pytest.mark.slow
def test_admin_routes_keep_their_contract(service: RunningService) -> None:
    run_schemathesis(service, service.admin["Authorization"].removeprefix("Bearer "),
                     "--include-path-regex", "^/v1/admin/")
