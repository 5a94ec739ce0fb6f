"""Verification of the `Upstash-Signature` JWT that QStash puts on every delivery.

The token is HS256-signed with the current signing key (the next key is tried after it, so a key
rotation needs no downtime). Its claims: `iss` "Upstash", `sub` the destination URL QStash was
asked to call, `exp`/`nbf`/`iat`, a unique `jti` and `body`, the base64url SHA-256 of the raw
request body. Unlike the reference receiver, a token id seen before is refused, which closes the
replay window the token's lifetime would otherwise leave open.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import jwt

ISSUER = "Upstash"
ALGORITHM = "HS256"
REQUIRED_CLAIMS = ("iss", "sub", "exp", "nbf", "iat", "jti", "body")


class InvalidSignature(Exception):
    """The request does not carry a valid QStash signature; `reason` says why (for logs, not clients)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SeenTokenIds(Protocol):
    """Remembers token ids (`jti`) until their tokens expire, so that a token is accepted once."""

    def remember(self, jti: str, expires_at: float) -> bool:
        """Record `jti` until `expires_at` (unix seconds); False if it was already recorded."""
        ...


class InMemorySeenTokenIds:
    """Token ids of one process, forgotten when their tokens expire.

    Holds at most `max_entries`; when full, the ids closest to expiry are forgotten first.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self._max_entries = max_entries
        self._clock = clock
        self._expiry_by_jti: dict[str, float] = {}
        self._by_expiry: list[tuple[float, str]] = []
        self._lock = threading.Lock()

    def remember(self, jti: str, expires_at: float) -> bool:
        with self._lock:
            self._forget_expired(self._clock())
            if jti in self._expiry_by_jti:
                return False
            while len(self._expiry_by_jti) >= self._max_entries:
                self._forget_soonest()
            self._expiry_by_jti[jti] = expires_at
            heapq.heappush(self._by_expiry, (expires_at, jti))
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._expiry_by_jti)

    def _forget_expired(self, now: float) -> None:
        while self._by_expiry and self._by_expiry[0][0] <= now:
            self._forget_soonest()

    def _forget_soonest(self) -> None:
        expires_at, jti = heapq.heappop(self._by_expiry)
        if self._expiry_by_jti.get(jti) == expires_at:
            del self._expiry_by_jti[jti]


def body_hash(body: bytes) -> str:
    """The `body` claim for a raw body: base64url SHA-256, without padding."""
    return base64.urlsafe_b64encode(hashlib.sha256(body).digest()).decode("ascii").rstrip("=")


class QStashSignatureVerifier:
    """Checks `Upstash-Signature` tokens for one endpoint.

    `expected_url` is the endpoint's configured public URL (what QStash was told to call), never
    the URL the request arrived at, which a proxy may have rewritten and a client may choose.
    """

    def __init__(
        self,
        current_key: str,
        next_key: str,
        expected_url: str,
        clock_tolerance_s: float = 5,
        *,
        seen_token_ids: SeenTokenIds,
    ) -> None:
        self._keys = [key for key in (current_key, next_key) if key]
        if not self._keys:
            raise ValueError("at least one QStash signing key is required")
        if not expected_url:
            raise ValueError("the endpoint's public URL is required")
        self._expected_url = expected_url
        self._clock_tolerance_s = clock_tolerance_s
        self._seen_token_ids = seen_token_ids

    def verify(self, signature: str | None, body: bytes) -> dict[str, Any]:
        """Return the token's claims if `signature` is valid for `body`; raise `InvalidSignature` otherwise."""
        if not signature:
            raise InvalidSignature("missing Upstash-Signature header")
        claims = self._decode(signature)
        for name in ("exp", "nbf", "iat"):
            if not isinstance(claims[name], int | float) or isinstance(claims[name], bool):
                raise InvalidSignature(f"claim {name} is not a number")
        if not isinstance(claims["jti"], str):
            raise InvalidSignature("claim jti is not a string")
        if not isinstance(claims["body"], str) or not hmac.compare_digest(claims["body"].rstrip("="), body_hash(body)):
            raise InvalidSignature("body hash does not match the request body")
        if not self._seen_token_ids.remember(claims["jti"], claims["exp"] + self._clock_tolerance_s):
            raise InvalidSignature(f"token {claims['jti']} was already used")
        return claims

    def _decode(self, signature: str) -> dict[str, Any]:
        for key in self._keys:
            try:
                return jwt.decode(
                    signature,
                    key,
                    algorithms=[ALGORITHM],
                    issuer=ISSUER,
                    subject=self._expected_url,
                    leeway=self._clock_tolerance_s,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
            except jwt.InvalidSignatureError:
                continue
            except (jwt.PyJWTError, RecursionError) as error:
                raise InvalidSignature(f"{type(error).__name__}: {error}") from error
        raise InvalidSignature("signature matches neither the current nor the next signing key")
