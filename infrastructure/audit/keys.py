"""Who signs the audit checkpoints: Ed25519 (via `cryptography`) or, with no key pair, HMAC-SHA256."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from application.audit_chain import Checkpoint

logger = logging.getLogger(__name__)

ED25519 = "ed25519"
HMAC_SHA256 = "hmac-sha256"
GENERATED_KEY_FILE = "audit-signing-key.pem"


def _raw_public(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _key_id(material: bytes) -> str:
    return hashlib.sha256(material).hexdigest()[:16]


class Ed25519Signer:
    algorithm = ED25519

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private = private_key
        self.public_key = private_key.public_key()
        self.key_id = _key_id(_raw_public(self.public_key))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.public_key)

    def public_pem(self) -> str:
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


class Ed25519Verifier:
    def __init__(self, public_key: Ed25519PublicKey) -> None:
        self.public_key = public_key
        self.key_id = _key_id(_raw_public(public_key))

    def verify(self, checkpoint: Checkpoint) -> bool:
        if checkpoint.algorithm != ED25519:
            return False
        try:
            self.public_key.verify(checkpoint.signature, checkpoint.message())
        except InvalidSignature:
            return False
        return True


class HmacSigner:
    """Signs and verifies with one shared secret (whoever verifies could also sign)."""

    algorithm = HMAC_SHA256

    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("the audit HMAC key must be at least 16 bytes")
        self._secret = secret
        self.key_id = _key_id(b"hmac-key-id:" + secret)

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self._secret, message, hashlib.sha256).digest()

    def verifier(self) -> HmacSigner:
        return self

    def verify(self, checkpoint: Checkpoint) -> bool:
        return checkpoint.algorithm == HMAC_SHA256 and hmac.compare_digest(
            checkpoint.signature, self.sign(checkpoint.message())
        )


def _text_or_file(value: str) -> bytes:
    stripped = value.strip()
    if stripped.startswith("-----BEGIN"):
        return stripped.encode()
    return Path(stripped).expanduser().read_bytes()


def load_private_key(value: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM text or a PEM file's path."""
    key = serialization.load_pem_private_key(_text_or_file(value), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("the audit signing key must be an Ed25519 private key")
    return key


def load_public_key(value: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM text, a PEM file's path, or its 32 raw bytes in hex or base64."""
    stripped = value.strip()
    raw: bytes | None = None
    if not stripped.startswith("-----BEGIN") and not Path(stripped).expanduser().exists():
        for decode in (bytes.fromhex, base64.b64decode):
            try:
                raw = decode(stripped)
                break
            except (ValueError, binascii.Error):
                continue
        if raw is None or len(raw) != 32:
            raise ValueError("not an Ed25519 public key (PEM, a PEM file, or 32 bytes in hex or base64)")
        return Ed25519PublicKey.from_public_bytes(raw)
    key = serialization.load_pem_public_key(_text_or_file(stripped))
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("the public key must be an Ed25519 key")
    return key


def generated_signing_key(data_dir: Path) -> Ed25519PrivateKey:
    """The key in DATA_DIR/audit-signing-key.pem, generated (mode 0600) the first time."""
    path = data_dir / GENERATED_KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process of this service made it first
            pass
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
            logger.info("generated the audit signing key", extra={"path": str(path)})
    return load_private_key(str(path))


def signer_from_settings(settings: Any) -> Ed25519Signer | HmacSigner | None:
    """The configured signer: an Ed25519 key, else an HMAC key, else (embedded PostgreSQL) a generated key.

    None when the database is external and no key is configured: nothing can be signed.
    """
    if settings.audit_signing_key is not None:
        return Ed25519Signer(load_private_key(settings.audit_signing_key.get_secret_value()))
    if settings.audit_hmac_key is not None:
        return HmacSigner(settings.audit_hmac_key.get_secret_value().encode())
    if settings.database_url is None:
        return Ed25519Signer(generated_signing_key(Path(settings.data_dir)))
    return None
