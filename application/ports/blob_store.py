"""The blob store port: where stored videos (and other large bodies) live.

Writes are streamed: a store never holds a whole body in memory, and a body becomes visible under its
key only once it is complete. Storage faults surface as ``TransientMediaError("storage_unavailable")``;
a body over its size limit as ``PermanentMediaError("too_large")``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from application.ports.errors import PermanentMediaError

MIB = 1024 * 1024

_KEY_SEGMENT = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class BlobRef:
    """Where a stored blob is and what it holds; ``sha256`` is hex ("" when the store cannot tell)."""

    uri: str
    key: str
    size: int
    sha256: str
    content_type: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "key": self.key,
            "size": self.size,
            "sha256": self.sha256,
            "content_type": self.content_type,
        }


class InvalidBlobKeyError(ValueError):
    """The key is not a relative, '/'-separated path of safe segments."""


class BlobNotFoundError(LookupError):
    """No blob is stored under the key."""


class BlobRangeError(ValueError):
    """The requested byte range cannot be satisfied (HTTP 416)."""


def check_blob_key(key: str) -> str:
    """Return ``key`` if every '/'-separated segment is made of ``A-Za-z0-9._-`` and does not start with '.'.

    This rules out absolute paths, ``..``, empty segments and hidden names, which stores keep for
    their own temporary and metadata files.
    """
    if not key or len(key) > 512 or not all(_KEY_SEGMENT.fullmatch(part) for part in key.split("/")):
        raise InvalidBlobKeyError(f"invalid blob key: {key!r}")
    return key


def check_byte_range(start: int, end: int | None) -> None:
    """Reject a range that no blob could satisfy: a negative start or an end before the start."""
    if start < 0 or (end is not None and end < start):
        raise BlobRangeError(f"invalid byte range {start}-{'' if end is None else end}")


class BodyMeter:
    """Counts and hashes a body while it streams through, stopping it once it passes ``max_bytes``."""

    def __init__(self, max_bytes: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._digest = hashlib.sha256()

    def measure(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Yield ``chunks`` unchanged; raise ``PermanentMediaError("too_large")`` past the limit."""
        for chunk in self.count(chunks):
            self._digest.update(chunk)
            yield chunk

    def count(self, chunks: Iterable[bytes]) -> Iterator[bytes]:
        """Like `measure` but without hashing: the caller feeds `hash` (from another thread, say)."""
        for chunk in chunks:
            self.size += len(chunk)
            if self.max_bytes is not None and self.size > self.max_bytes:
                raise PermanentMediaError(
                    "too_large", f"body exceeds {self.max_bytes} bytes", details={"max_bytes": self.max_bytes}
                )
            yield chunk

    def hash(self, chunk: bytes) -> None:
        """Add a chunk to the sha256 (in order; for callers of `count`)."""
        self._digest.update(chunk)

    @property
    def sha256(self) -> str:
        return self._digest.hexdigest()


class BlobStore(Protocol):
    """Stores bodies under keys; streamed in, streamed out, committed atomically."""

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobRef:
        """Stream ``chunks`` into the blob ``key``, replacing any blob there, and return its reference.

        Size and sha256 are computed on the way. Nothing is visible under ``key`` until the whole body
        is stored; on any failure (including an exception raised by ``chunks``, which propagates) the
        previous blob, if any, stays as it was. Over ``max_bytes`` raises
        ``PermanentMediaError("too_large")``.
        """
        ...

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes ``start``..``end`` (inclusive, like HTTP Range; ``None`` = to the last byte).

        An end past the last byte is clamped. Raises ``BlobNotFoundError`` for a missing key and
        ``BlobRangeError`` for a start past the last byte. Chunks are bounded in size.
        """
        ...

    def stat(self, key: str) -> BlobRef | None:
        """The reference of the blob under ``key``, or None when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the blob under ``key``; a missing key is not an error."""
        ...

    def check(self) -> None:
        """Readiness: return when the store can be used, raise ``TransientMediaError`` otherwise."""
        ...
