"""A blob store in a local directory.

A body is streamed into a hidden temporary file beside its target (``.NAME.RANDOM.part``), fsynced, and
moved over the target with ``os.replace``, so readers see the old blob or the whole new one, never a part.
Size, sha256 and content type are kept in a sidecar ``.NAME.meta.json`` that names the data file's inode,
size and mtime; a sidecar that does not match its data file (a crash between the two renames) is rebuilt
by hashing the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from application.ports.blob_store import (
    MIB,
    BlobNotFoundError,
    BlobRangeError,
    BlobRef,
    BodyMeter,
    check_blob_key,
    check_byte_range,
)
from application.ports.errors import TransientMediaError
from infrastructure.blobs.pipelined import run_pipelined

UNKNOWN_CONTENT_TYPE = "application/octet-stream"


def _unavailable(key: str, error: OSError) -> TransientMediaError:
    return TransientMediaError("storage_unavailable", f"blob store I/O failed: {error}", details={"key": key})


@contextlib.contextmanager
def _storage_faults(key: str) -> Iterator[None]:
    """Turn disk errors into ``TransientMediaError("storage_unavailable")``."""
    try:
        yield
    except OSError as error:
        raise _unavailable(key, error) from error


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class _EarlyWriteback:
    """Starts the disk write of each finished window of a file while the rest is still coming.

    ``posix_fadvise(DONTNEED)`` on a written range starts its writeback without waiting (and drops
    the pages already written back), so the one fsync before the rename finds a window or two
    still dirty instead of the whole body: a 1 GiB blob no longer waits a second for its fsync,
    and the page cache does not fill with it. Without ``posix_fadvise`` (not Linux) it does nothing.
    """

    WINDOW = 8 * MIB

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._written = 0
        self._started = 0  # everything before this offset has had its writeback started
        self._advise = getattr(os, "posix_fadvise", None)

    def wrote(self, length: int) -> None:
        self._written += length
        if self._advise is None or self._written - self._started < 2 * self.WINDOW:
            return
        # From the window before the last one started: its pages are clean by now and are dropped.
        begin = max(0, self._started - self.WINDOW)
        self._advise(self._fd, begin, self._written - begin, os.POSIX_FADV_DONTNEED)
        self._started = self._written


class FilesystemBlobStore:
    """Blobs as files under ``root``; a key's segments are its sub-directories."""

    def __init__(self, root: str | Path, *, chunk_size: int = MIB) -> None:
        self.root = Path(root).resolve()
        self.chunk_size = chunk_size

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*check_blob_key(key).split("/"))

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_name(f".{path.name}.meta.json")

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobRef:
        path = self._path(key)
        with _storage_faults(key):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        committed = False
        try:
            meter = BodyMeter(max_bytes)
            with os.fdopen(fd, "wb") as file:
                writeback = _EarlyWriteback(file.fileno())

                def hash_and_write(chunk: bytes) -> None:
                    meter.hash(chunk)
                    with _storage_faults(key):
                        file.write(chunk)
                        writeback.wrote(len(chunk))

                # The download on this thread, hash and write on one other (infrastructure/blobs/pipelined.py).
                run_pipelined(meter.count(chunks), [hash_and_write])
                with _storage_faults(key):
                    file.flush()
                    os.fsync(file.fileno())
                    written = os.fstat(file.fileno())
            ref = BlobRef(uri=path.as_uri(), key=key, size=meter.size, sha256=meter.sha256, content_type=content_type)
            with _storage_faults(key):
                os.replace(temp_name, path)
                committed = True
                self._write_meta(path, ref, written)
                _fsync_directory(path.parent)
            return ref
        finally:
            if not committed:
                _unlink_quietly(temp_name)

    def _write_meta(self, path: Path, ref: BlobRef, data: os.stat_result) -> None:
        meta = {
            "sha256": ref.sha256,
            "size": ref.size,
            "content_type": ref.content_type,
            "inode": data.st_ino,
            "mtime_ns": data.st_mtime_ns,
        }
        meta_path = self._meta_path(path)
        fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{meta_path.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(meta, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, meta_path)
        except BaseException:
            _unlink_quietly(temp_name)
            raise

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_byte_range(start, end)
        path = self._path(key)
        try:
            file = open(path, "rb")  # noqa: SIM115 - closed by the returned generator
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as error:
            raise BlobNotFoundError(key) from error
        except OSError as error:
            raise _unavailable(key, error) from error
        try:
            with _storage_faults(key):
                size = os.fstat(file.fileno()).st_size
            last = size - 1 if end is None else min(end, size - 1)
            if start > last and not (start == 0 and size == 0):
                raise BlobRangeError(f"range starts at {start}, blob has {size} bytes")
            with _storage_faults(key):
                file.seek(start)
        except BaseException:
            file.close()
            raise
        return self._read(file, key, last - start + 1)

    def _read(self, file: BinaryIO, key: str, remaining: int) -> Iterator[bytes]:
        with file:
            while remaining > 0:
                with _storage_faults(key):
                    chunk = file.read(min(self.chunk_size, remaining))
                if not chunk:
                    return
                remaining -= len(chunk)
                yield chunk

    def stat(self, key: str) -> BlobRef | None:
        path = self._path(key)
        with _storage_faults(key):
            try:
                data = path.stat()
            except (FileNotFoundError, NotADirectoryError):
                return None
            if not path.is_file():
                return None
            meta = self._read_meta(path)
            if meta is None or (meta.get("inode"), meta.get("mtime_ns"), meta.get("size")) != (
                data.st_ino,
                data.st_mtime_ns,
                data.st_size,
            ):
                return self._rebuild_meta(path, key, data)
        return BlobRef(
            uri=path.as_uri(),
            key=key,
            size=data.st_size,
            sha256=meta["sha256"],
            content_type=meta["content_type"],
        )

    def _read_meta(self, path: Path) -> dict[str, Any] | None:
        try:
            with open(self._meta_path(path), encoding="utf-8") as file:
                meta = json.load(file)
        except (FileNotFoundError, ValueError):
            return None
        return meta if isinstance(meta, dict) else None

    def _rebuild_meta(self, path: Path, key: str, data: os.stat_result) -> BlobRef:
        digest = hashlib.sha256()
        with open(path, "rb") as file:
            while chunk := file.read(self.chunk_size):
                digest.update(chunk)
        ref = BlobRef(
            uri=path.as_uri(),
            key=key,
            size=data.st_size,
            sha256=digest.hexdigest(),
            content_type=UNKNOWN_CONTENT_TYPE,
        )
        self._write_meta(path, ref, data)
        return ref

    def delete(self, key: str) -> None:
        path = self._path(key)
        with _storage_faults(key):
            try:
                _unlink_quietly(path)
                _unlink_quietly(self._meta_path(path))
            except NotADirectoryError:
                return

    def check(self) -> None:
        with _storage_faults(""):
            self.root.mkdir(parents=True, exist_ok=True)
            if not os.access(self.root, os.W_OK | os.X_OK):
                raise PermissionError(f"blob directory {self.root} is not writable")
