"""Name-based ids (RFC 4122 version 5, SHA-1): `uuid.uuid5`'s ids, with the namespace hashed once.

`uuid.uuid5(namespace, name)` hashes the namespace's 16 bytes again for every name and builds the
UUID through its general constructor; `NameBasedIds(namespace)(name)` copies the hash state of the
namespace, adds the name (UTF-8, strict, as uuid5 encodes it) and sets the same version and variant
bits: the same id for every name (ids are stored in the event log: they must never change).
"""

from __future__ import annotations

from hashlib import sha1
from uuid import UUID

_VERSION_AND_VARIANT = (0xF000 << 64) | (0xC000 << 48)
_VERSION_5_RFC_4122 = (5 << 76) | (0x8000 << 48)


class NameBasedIds:
    """`uuid.uuid5(namespace, name)` for one namespace."""

    __slots__ = ("_namespace",)

    def __init__(self, namespace: UUID) -> None:
        self._namespace = sha1(namespace.bytes, usedforsecurity=False)

    def __call__(self, name: str) -> UUID:
        hashed = self._namespace.copy()
        hashed.update(name.encode("utf-8"))
        value = int.from_bytes(hashed.digest()[:16], "big")
        return UUID(int=value & ~_VERSION_AND_VARIANT | _VERSION_5_RFC_4122)
