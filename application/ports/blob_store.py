"""The `BlobStore` port: where videos and subtitle cues are stored, written as streams."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class BlobRef:
    uri: str
    key: str
    size: int
    sha256: str
    content_type: str

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri, "key": self.key, "size": self.size, "sha256": self.sha256,
                "content_type": self.content_type}


class BlobStore(Protocol):
    def put_stream(
        self, key: str, chunks: Iterable[bytes], *, content_type: str, max_bytes: int | None = None
    ) -> BlobRef:
        """Store the chunks under key, visible only once complete; size and sha256 computed on the way.

        Over max_bytes: nothing is stored and PermanentMediaError("too_large") is raised.
        Storage faults raise TransientMediaError("storage_unavailable").
        """

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Bytes start..end (inclusive, like HTTP Range) in bounded chunks."""

    def stat(self, key: str) -> BlobRef | None:
        """The stored object's reference, or None."""

    def size(self, key: str) -> int | None:
        """The stored object's size in bytes (cheap), or None."""

    def delete(self, key: str) -> None:
        """Remove the object if present."""

    def check(self) -> None:
        """Raise TransientMediaError if the store is unreachable."""
