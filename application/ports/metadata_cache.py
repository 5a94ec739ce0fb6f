"""The `MetadataCache` port: provider answers kept for a while, keyed by normalized URL."""

from __future__ import annotations

from typing import Any, Protocol


class MetadataCache(Protocol):
    def get(self, url_key: str) -> dict[str, Any] | None:
        """The cached MediaInfo dict, or None when absent or expired."""

    def put(self, url_key: str, info: dict[str, Any], ttl_seconds: float) -> None:
        """Store (or replace) an entry."""

    def invalidate(self, url_key: str) -> None:
        """Forget an entry (its URLs stopped working)."""

    def purge_expired(self) -> int:
        """Delete expired entries; returns how many."""
