"""Stream tokens: short-lived signed tokens that let one user read one task's stream and outputs from a URL.

Browsers' EventSource, <video> and <a download> cannot send an Authorization header. A token is
`kid.payload.signature`: `payload` is base64url(user|task|expiry), `signature` HMAC-SHA256 over
`kid.payload` with a key derived from a dedicated random secret, and `kid` names that secret, so that
tokens signed with a previous secret still verify while a rotation is under way (docs/security.md).

The secret is `MEDIATASKS_STREAM_TOKEN_SECRET`; unset, it is generated once and reused: into the data
directory (mode 0600) with the embedded database, else into a one-row table of the external database,
so that every process of a deployment signs with the same secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any
from uuid import UUID

from infrastructure.postgres.stream_token_secret import secret_in_database

logger = logging.getLogger(__name__)

STREAM_TOKEN_SECONDS = 600
SECRET_FILE = "stream-token-secret"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


class StreamTokens:
    """Issues tokens with the current secret; verifies tokens of the current and the previous secrets."""

    def __init__(self, secret: str, previous: list[str] | tuple[str, ...] = ()) -> None:
        self._current = self._key_id(secret)
        self._keys = {self._key_id(s): self._key(s) for s in (*previous, secret) if s}

    @staticmethod
    def _key_id(secret: str) -> str:
        return _b64(hashlib.sha256(b"mediatasks stream token key id\n" + secret.encode()).digest())[:8]

    @staticmethod
    def _key(secret: str) -> bytes:
        return hmac.new(secret.encode(), b"mediatasks stream token", hashlib.sha256).digest()

    def issue(self, user_id: str, task_id: UUID, now: float | None = None) -> tuple[str, int]:
        expires = int((now or time.time()) + STREAM_TOKEN_SECONDS)
        signed = f"{self._current}.{_b64(f'{user_id}|{task_id}|{expires}'.encode())}"
        return f"{signed}.{self._sign(self._keys[self._current], signed)}", expires

    def user_of(self, token: str, task_id: UUID, now: float | None = None) -> str | None:
        """The user a valid, unexpired token for this task was issued to; None otherwise."""
        if not token.isascii():
            return None
        kid, _, rest = token.partition(".")
        payload, _, signature = rest.partition(".")
        key = self._keys.get(kid)
        if (
            key is None
            or not signature
            or not hmac.compare_digest(signature.encode(), self._sign(key, f"{kid}.{payload}").encode())
        ):
            return None
        try:
            user_id, task, expires = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode().split("|")
            if task != str(task_id) or int(expires) < (now or time.time()):
                return None
        except ValueError:
            return None
        return user_id

    @staticmethod
    def _sign(key: bytes, signed: str) -> str:
        return _b64(hmac.new(key, signed.encode(), hashlib.sha256).digest())


def stream_tokens_for(settings: Any, datastore: Any) -> StreamTokens:
    """This deployment's stream tokens: the configured secret, else the one generated for it."""
    previous = settings.stream_token_previous_secrets
    previous_secrets = [p.strip() for p in previous.get_secret_value().split(",") if p.strip()] if previous else []
    if settings.stream_token_secret is not None:
        return StreamTokens(settings.stream_token_secret.get_secret_value(), previous_secrets)
    if settings.database_url is None:
        return StreamTokens(secret_in_file(Path(settings.data_dir) / SECRET_FILE), previous_secrets)
    return StreamTokens(secret_in_database(datastore), previous_secrets)


def secret_in_file(path: Path) -> str:
    """The secret kept in `path` (only its owner may read it), created there on first use."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another process may be writing it right now
            secret = path.read_text().strip()
            if secret:
                if path.stat().st_mode & 0o077:
                    logger.warning("stream token secret file was readable by others; made it 0600")
                    path.chmod(0o600)
                return secret
            time.sleep(0.1)
        raise RuntimeError(f"{path} is empty: delete it or set MEDIATASKS_STREAM_TOKEN_SECRET") from None
    secret = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    return secret
