"""The stream-token secret of the embedded default: generated once into the data directory, owner-only, reused."""

from __future__ import annotations

import stat
from pathlib import Path
from uuid import uuid4

from infrastructure.api.stream_tokens import SECRET_FILE, secret_in_file, stream_tokens_for
from infrastructure.settings import Settings


def test_the_secret_is_generated_once_with_mode_0600_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "data" / SECRET_FILE
    secret = secret_in_file(path)
    assert len(secret) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert secret_in_file(path) == secret
    path.chmod(0o644)
    assert secret_in_file(path) == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600, "a secret readable by others is made owner-only"


def test_embedded_deployments_sign_with_the_data_dir_secret_and_a_set_secret_wins(tmp_path: Path) -> None:
    task_id = uuid4()
    embedded = stream_tokens_for(Settings(data_dir=tmp_path), datastore=None)
    token, _ = embedded.issue("alice", task_id)
    assert stream_tokens_for(Settings(data_dir=tmp_path), datastore=None).user_of(token, task_id) == "alice"
    configured = stream_tokens_for(Settings(data_dir=tmp_path, stream_token_secret="s"), datastore=None)
    assert configured.user_of(token, task_id) is None
    assert "alice" == stream_tokens_for(
        Settings(
            data_dir=tmp_path,
            stream_token_secret="s",
            stream_token_previous_secrets=(tmp_path / SECRET_FILE).read_text().strip(),
        ),
        datastore=None,
    ).user_of(token, task_id)
