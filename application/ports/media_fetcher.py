"""The `MediaFetcher` port: fetch a URL the service did not choose (SSRF-guarded, bounded, streamed)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol


class FetchedStream(Protocol):
    """An open response whose body is read in bounded chunks."""

    status_code: int
    headers: Mapping[str, str]
    final_url: str

    def iter_bytes(self) -> Iterator[bytes]:
        """The body in chunks; raises PermanentMediaError("too_large") past the limit."""


class MediaFetcher(Protocol):
    def stream(
        self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None
    ) -> AbstractContextManager[FetchedStream]:
        """Open the URL (every hop checked) for streaming; errors are Permanent/TransientMediaError."""

    def get_bytes(self, url: str, *, max_bytes: int, headers: Mapping[str, str] | None = None) -> bytes:
        """A small body (a subtitle file), bounded by max_bytes."""
