"""The filesystem store's writes past the page cache (O_DIRECT blocks, a buffered tail), and its
fallbacks where a filesystem refuses O_DIRECT: the stored bytes, size and sha256 are the same."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from application.ports.blob_store import MIB
from infrastructure.blobs import FilesystemBlobStore
from infrastructure.blobs.filesystem import _BlockWriter

BLOCK = _BlockWriter.BLOCK


def body_of(size: int) -> bytes:
    return (hashlib.sha256(str(size).encode()).digest() * (size // 32 + 1))[:size]


def chunked(body: bytes, size: int) -> list[bytes | bytearray]:
    """Chunks of an awkward size, alternately bytes and bytearray (the fetcher yields bytearrays)."""
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return [bytearray(piece) if n % 2 else piece for n, piece in enumerate(pieces)]


def store_and_check(root: Path, body: bytes) -> None:
    store = FilesystemBlobStore(root)
    ref = store.put_stream("videos/t/1.mp4", chunked(body, MIB + 7), content_type="video/mp4")
    assert (ref.size, ref.sha256) == (len(body), hashlib.sha256(body).hexdigest())
    assert (root / "videos" / "t" / "1.mp4").read_bytes() == body
    assert store.stat("videos/t/1.mp4") == ref
    assert [p.name for p in (root / "videos" / "t").iterdir() if p.name.endswith(".part")] == []


@pytest.mark.parametrize("size", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345])
def test_blocks_and_tail_store_every_byte(tmp_path: Path, size: int) -> None:
    store_and_check(tmp_path, body_of(size))


def test_a_filesystem_refusing_o_direct_gets_buffered_writes(tmp_path: Path, monkeypatch: Any) -> None:
    real_fcntl = fcntl.fcntl
    refused = []

    def no_direct(fd: int, command: int, arg: int = 0) -> Any:
        if command == fcntl.F_SETFL and arg & os.O_DIRECT:
            refused.append(fd)
            raise OSError(errno.EINVAL, "O_DIRECT not supported")
        return real_fcntl(fd, command, arg)

    monkeypatch.setattr(fcntl, "fcntl", no_direct)
    store_and_check(tmp_path, body_of(2 * BLOCK + 99))
    assert refused  # it was asked, refused, and the body still stored whole


def direct_writes_go_to(monkeypatch: Any, disk: Callable[[int, Callable[..., int], int, Any], int]) -> list[int]:
    """Replace os.write: a write with O_DIRECT set goes to `disk(call number, real write, fd, data)`.

    Returns the lengths of the direct writes asked for (a filesystem that accepts the flag and then
    refuses or shortens writes, which this machine's does not)."""
    real_write = os.write
    asked: list[int] = []

    def write(fd: int, data: Any) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            asked.append(len(data))
            return disk(len(asked), real_write, fd, data)
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return asked


def refused(*_args: Any) -> int:
    raise OSError(errno.EINVAL, "Invalid argument")


def test_a_refused_direct_write_is_written_buffered(tmp_path: Path, monkeypatch: Any) -> None:
    asked = direct_writes_go_to(monkeypatch, refused)
    store_and_check(tmp_path, body_of(3 * BLOCK + 5))
    assert asked == [BLOCK]  # the first block was refused once; the rest went buffered


def test_a_direct_write_cut_short_then_refused_keeps_every_byte_once(tmp_path: Path, monkeypatch: Any) -> None:
    def short_then_refused(call: int, real_write: Callable[..., int], fd: int, data: Any) -> int:
        if call == 1:
            return real_write(fd, data[:MIB])  # the disk took a first MiB of the block
        return refused()

    asked = direct_writes_go_to(monkeypatch, short_then_refused)
    store_and_check(tmp_path, body_of(2 * BLOCK + 3))
    assert asked == [BLOCK, BLOCK - MIB]
