"""Blobs in a directory: written to a temporary file, fsynced, then renamed into place."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath

from application.ports.blob_store import BlobRef
from application.ports.errors import PermanentMediaError, TransientMediaError

READ_CHUNK = 1024 * 1024


class FilesystemBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        pure = PurePosixPath(key)
        if not key or pure.is_absolute() or ".." in pure.parts or "\\" in key or "\x00" in key:
            raise ValueError(f"invalid blob key {key!r}")
        return self.root.joinpath(*pure.parts)

    def put_stream(self, key: str, chunks: Iterable[bytes], *, content_type: str,
                   max_bytes: int | None = None) -> BlobRef:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".part-")
        except OSError as e:
            raise TransientMediaError("storage_unavailable", f"Cannot write blobs: {e.strerror}") from e
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(fd, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    if max_bytes is not None and size > max_bytes:
                        raise PermanentMediaError("too_large", f"The file is larger than {max_bytes} bytes.")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            (path.parent / f".{path.name}.type").write_text(content_type)
        except OSError as e:
            _remove(tmp)
            raise TransientMediaError("storage_unavailable", f"Cannot write blobs: {e.strerror}") from e
        except BaseException:
            _remove(tmp)
            raise
        return BlobRef(uri=path.as_uri(), key=key, size=size, sha256=digest.hexdigest(), content_type=content_type)

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        path = self._path(key)
        with open(path, "rb") as f:
            f.seek(start)
            remaining = None if end is None else end - start + 1
            while remaining is None or remaining > 0:
                chunk = f.read(READ_CHUNK if remaining is None else min(READ_CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def stat(self, key: str) -> BlobRef | None:
        path = self._path(key)
        if not path.is_file():
            return None
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(READ_CHUNK), b""):
                digest.update(chunk)
        type_file = path.parent / f".{path.name}.type"
        content_type = type_file.read_text() if type_file.exists() else "application/octet-stream"
        return BlobRef(path.as_uri(), key, path.stat().st_size, digest.hexdigest(), content_type)

    def size(self, key: str) -> int | None:
        path = self._path(key)
        return path.stat().st_size if path.is_file() else None

    def delete(self, key: str) -> None:
        path = self._path(key)
        _remove(str(path))
        _remove(str(path.parent / f".{path.name}.type"))

    def check(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.root, prefix=".probe-")
            probe.close()
        except OSError as e:
            raise TransientMediaError("storage_unavailable", f"The blob directory is not writable: {e.strerror}") from e


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
