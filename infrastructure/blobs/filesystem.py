"""A blob store in a local directory.

A body is streamed into a hidden temporary file beside its target (``.NAME.RANDOM.part``), fsynced, and
moved over the target with ``os.replace``, so readers see the old blob or the whole new one, never a part.
Size, sha256 and content type are kept in a sidecar ``.NAME.meta.json`` that names the data file's inode,
size and mtime; a sidecar that does not match its data file (a crash between the two renames) is rebuilt
by hashing the file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import mmap
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
    """Starts the disk write of each finished window of a buffered file while the rest is still coming.

    ``posix_fadvise(DONTNEED)`` on a written range starts its writeback without waiting (and drops
    the pages already written back), so the one fsync before the rename finds a window or two
    still dirty instead of the whole body. Without ``posix_fadvise`` (not Linux) it does nothing.
    Used only where `_BlockWriter` cannot write past the page cache.
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


def _set_direct(fd: int, on: bool) -> bool:
    """Turn ``O_DIRECT`` on or off for an open file; False where the platform or filesystem refuses it."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        return False
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, flags | direct if on else flags & ~direct)
    except OSError as refused:
        if refused.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return False
    return on


def _write_all(fd: int, data: memoryview) -> None:
    while len(data):
        data = data[os.write(fd, data) :]


class _BlockWriter:
    """Writes a body in page-aligned blocks with ``O_DIRECT``: from its buffer to the disk, past the page cache.

    A buffered write copies each byte into the page cache, and the kernel then spends as much CPU
    again writing those pages back (page by page, with ext4's extent conversion), on the same two
    cores as the download and sha256; a direct write of a 4 MiB block hands the disk the buffer
    itself, and returns when it is written, so the fsync before the rename has only metadata left
    (docs/performance.md). The tail, shorter than a block, is written buffered. Where ``O_DIRECT``
    is refused (a filesystem without it, or a write it will not take), the rest is written
    buffered with `_EarlyWriteback`; the bytes are the same either way.
    """

    BLOCK = 4 * MIB

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = mmap.mmap(-1, self.BLOCK)  # page-aligned, as O_DIRECT needs
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._direct = _set_direct(fd, True)
        self._writeback = _EarlyWriteback(fd)

    def write(self, chunk: bytes) -> None:
        data = memoryview(chunk)
        while len(data):
            take = min(len(data), self.BLOCK - self._filled)
            self._view[self._filled : self._filled + take] = data[:take]
            self._filled += take
            data = data[take:]
            if self._filled == self.BLOCK:
                self._write_block()

    def _write_block(self) -> None:
        block = self._view[: self._filled]
        while len(block):
            try:
                block = block[os.write(self._fd, block) :]
            except OSError as refused:
                if not self._direct or refused.errno != errno.EINVAL:
                    raise
                # A direct write refused (the filesystem's alignment, say): what is left goes buffered.
                self._direct = _set_direct(self._fd, False)
        if not self._direct:
            self._writeback.wrote(self._filled)
        self._filled = 0

    def finish(self) -> None:
        """Write what is left (buffered: it is shorter than a block)."""
        if self._direct:
            self._direct = _set_direct(self._fd, False)
        if self._filled:
            _write_all(self._fd, self._view[: self._filled])
            self._filled = 0

    def close(self) -> None:
        """Release the buffer (the file stays open)."""
        self._view.release()
        self._buffer.close()


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
            with contextlib.ExitStack() as cleanup:
                cleanup.callback(os.close, fd)
                with _storage_faults(key):
                    writer = _BlockWriter(fd)
                cleanup.callback(writer.close)

                def write(chunk: bytes) -> None:
                    with _storage_faults(key):
                        writer.write(chunk)

                # The download on this thread, sha256 on a second, the disk writes on a third
                # (infrastructure/blobs/pipelined.py).
                run_pipelined(meter.count(chunks), [meter.hash, write], depth=8)
                with _storage_faults(key):
                    writer.finish()
                    os.fsync(fd)
                    written = os.fstat(fd)
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
