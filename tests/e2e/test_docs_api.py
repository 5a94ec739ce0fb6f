"""Every shell example in docs/api.md runs against a real `mediatasks serve`."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import ADMIN_TOKEN, RunningService

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


@pytest.mark.slow
def test_api_doc_examples_run(service: RunningService) -> None:
    blocks = re.findall(r"```sh\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) >= 8
    script = "\n".join(blocks)
    script = script.replace("BASE=http://127.0.0.1:8000", f"BASE={service.url}")
    script = script.replace("Bearer secret", f"Bearer {ADMIN_TOKEN}")
    script = script.replace('"user_id": "alice"', '"user_id": "docs-alice"').replace(
        "users/alice/", "users/docs-alice/"
    )
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert '"balance":15' in out
    assert "}200\n" in out
    assert '"code":"unsupported_url"' in out
    assert '"Started"' in out
    assert '"code":"task_not_retryable"' in out
    assert "event: status" in out
    assert '"code":"url_not_allowed"' in out and '{"webhooks":[]}' in out
    assert 'ratelimit-policy: "reads";q=' in out.lower() and '"max_active_tasks":5' in out
