"""One contract for every BlobStore: the filesystem store in a temporary directory and the S3 store
against moto's server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
import random
import time
import tracemalloc
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from application.ports.blob_store import (
    MIB,
    BlobNotFoundError,
    BlobRangeError,
    BlobStore,
    InvalidBlobKeyError,
)
from application.ports.errors import PermanentMediaError, TransientMediaError
from infrastructure.blobs import FilesystemBlobStore, S3BlobStore, blob_store_from_url
from tests.support.moto_server import free_loopback_port, moto_endpoint  # noqa: F401 - fixture

PART_SIZE = 5 * MIB
VIDEO = "video/mp4"


@dataclass
class StoreUnderTest:
    """A store and, for S3, a raw client on the same bucket to look behind the port."""

    kind: str
    store: BlobStore
    root: Path | None = None
    s3: Any = None
    bucket: str = ""

    def in_progress_uploads(self) -> list[dict[str, Any]]:
        return list(self.s3.list_multipart_uploads(Bucket=self.bucket).get("Uploads", []))

    def assert_no_leftovers(self) -> None:
        """No temporary file (filesystem) or unfinished multipart upload (S3) remains."""
        if self.kind == "s3":
            assert self.in_progress_uploads() == []
        else:
            assert self.root is not None
            assert [path for path in self.root.rglob("*.part")] == []


def s3_store(endpoint: str, **options: Any) -> S3BlobStore:
    return S3BlobStore(
        f"blobs-{uuid.uuid4().hex[:12]}",
        "tenant/videos",
        endpoint_url=endpoint,
        part_size=PART_SIZE,
        create_bucket=True,
        **options,
    )


@pytest.fixture(params=["file", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> StoreUnderTest:
    if request.param == "file":
        root = tmp_path / "blobs"
        return StoreUnderTest("file", FilesystemBlobStore(root), root=root)
    endpoint = request.getfixturevalue("moto_endpoint")
    store = s3_store(endpoint)
    store.check()
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return StoreUnderTest("s3", store, s3=client, bucket=store.bucket)


def body(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for offset in range(0, len(data), size):
        yield data[offset : offset + size]


def failing_after(data: bytes, size: int) -> Iterator[bytes]:
    yield from chunked(data, size)
    raise ConnectionResetError("source went away")


def read_all(chunks: Iterable[bytes]) -> bytes:
    return b"".join(chunks)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class TestBlobStoreContract:
    def test_put_stat_read_round_trip(self, blobs: StoreUnderTest) -> None:
        data = body(100_000)
        ref = blobs.store.put_stream("task-1/video.mp4", chunked(data, 7_000), content_type=VIDEO)

        assert (ref.key, ref.size, ref.sha256, ref.content_type) == ("task-1/video.mp4", 100_000, sha256(data), VIDEO)
        assert ref.uri.endswith("/task-1/video.mp4")
        assert blobs.store.stat("task-1/video.mp4") == ref
        assert read_all(blobs.store.open_range("task-1/video.mp4")) == data

    @pytest.mark.parametrize(
        ("start", "end"),
        [(0, 0), (1_000, 1_999), (99_500, None), (0, None), (99_990, 250_000), (99_999, 99_999)],
        ids=["first-byte", "middle", "suffix", "whole", "end-past-last-byte", "last-byte"],
    )
    def test_byte_ranges(self, blobs: StoreUnderTest, start: int, end: int | None) -> None:
        data = body(100_000)
        blobs.store.put_stream("ranged.mp4", chunked(data, 64 * 1024), content_type=VIDEO)

        got = read_all(blobs.store.open_range("ranged.mp4", start, end))

        assert got == data[start : None if end is None else end + 1]

    def test_ranges_come_in_bounded_chunks(self, blobs: StoreUnderTest) -> None:
        data = body(3 * MIB + 5)
        blobs.store.put_stream("big.mp4", chunked(data, MIB), content_type=VIDEO)

        chunks = list(blobs.store.open_range("big.mp4", 1, None))

        assert len(chunks) > 1
        assert max(len(chunk) for chunk in chunks) <= MIB
        assert b"".join(chunks) == data[1:]

    def test_unsatisfiable_range_and_missing_key(self, blobs: StoreUnderTest) -> None:
        blobs.store.put_stream("short.mp4", [b"0123456789"], content_type=VIDEO)

        with pytest.raises(BlobRangeError):
            blobs.store.open_range("short.mp4", 10)
        with pytest.raises(BlobRangeError):
            blobs.store.open_range("short.mp4", 5, 4)
        with pytest.raises(BlobNotFoundError):
            blobs.store.open_range("absent.mp4")

    def test_empty_body(self, blobs: StoreUnderTest) -> None:
        ref = blobs.store.put_stream("empty.vtt", iter(()), content_type="text/vtt")

        assert (ref.size, ref.sha256) == (0, sha256(b""))
        assert blobs.store.stat("empty.vtt") == ref
        assert read_all(blobs.store.open_range("empty.vtt")) == b""

    def test_multipart_round_trip(self, blobs: StoreUnderTest) -> None:
        data = body(12 * MIB, seed=2)
        part_sizes: list[int] = []
        if blobs.kind == "s3":
            blobs.store.client.meta.events.register(  # type: ignore[attr-defined]
                "before-parameter-build.s3.UploadPart", lambda params, **_: part_sizes.append(len(params["Body"]))
            )
        ref = blobs.store.put_stream("long.mp4", chunked(data, 700_000), content_type=VIDEO)

        assert (ref.size, ref.sha256) == (12 * MIB, sha256(data))
        assert blobs.store.stat("long.mp4") == ref
        assert read_all(blobs.store.open_range("long.mp4")) == data
        assert (
            read_all(blobs.store.open_range("long.mp4", PART_SIZE - 3, PART_SIZE + 2))
            == data[PART_SIZE - 3 : PART_SIZE + 3]
        )
        if blobs.kind == "s3":
            assert part_sizes == [PART_SIZE, PART_SIZE, 2 * MIB]
        blobs.assert_no_leftovers()

    def test_source_failing_midway_leaves_nothing_visible(self, blobs: StoreUnderTest) -> None:
        with pytest.raises(ConnectionResetError):
            blobs.store.put_stream("broken.mp4", failing_after(body(7 * MIB), MIB), content_type=VIDEO)

        assert blobs.store.stat("broken.mp4") is None
        with pytest.raises(BlobNotFoundError):
            blobs.store.open_range("broken.mp4")
        blobs.assert_no_leftovers()

    def test_failed_overwrite_keeps_the_previous_blob(self, blobs: StoreUnderTest) -> None:
        first = blobs.store.put_stream("kept.mp4", [b"first version"], content_type=VIDEO)

        with pytest.raises(ConnectionResetError):
            blobs.store.put_stream("kept.mp4", failing_after(body(6 * MIB), MIB), content_type=VIDEO)

        assert blobs.store.stat("kept.mp4") == first
        assert read_all(blobs.store.open_range("kept.mp4")) == b"first version"
        blobs.assert_no_leftovers()

    def test_over_max_bytes_is_too_large_and_leaves_nothing(self, blobs: StoreUnderTest) -> None:
        with pytest.raises(PermanentMediaError) as raised:
            blobs.store.put_stream("huge.mp4", chunked(body(12 * MIB), MIB), content_type=VIDEO, max_bytes=6 * MIB + 1)

        assert raised.value.code == "too_large"
        assert blobs.store.stat("huge.mp4") is None
        blobs.assert_no_leftovers()

    def test_exactly_max_bytes_is_accepted(self, blobs: StoreUnderTest) -> None:
        ref = blobs.store.put_stream("fits.mp4", [b"x" * 1000], content_type=VIDEO, max_bytes=1000)

        assert ref.size == 1000

    def test_overwrite_replaces_content_and_type(self, blobs: StoreUnderTest) -> None:
        srt = b"1\n00:00:00,000 --> 00:00:01,000\nhi\n"
        blobs.store.put_stream("subs/en", [b"WEBVTT\n\n"], content_type="text/vtt")
        second = blobs.store.put_stream("subs/en", [srt], content_type="application/x-subrip")

        assert blobs.store.stat("subs/en") == second
        assert read_all(blobs.store.open_range("subs/en")) == srt

    def test_missing_key_and_delete(self, blobs: StoreUnderTest) -> None:
        assert blobs.store.stat("never-written.mp4") is None
        blobs.store.delete("never-written.mp4")

        blobs.store.put_stream("gone.mp4", [b"data"], content_type=VIDEO)
        blobs.store.delete("gone.mp4")

        assert blobs.store.stat("gone.mp4") is None
        with pytest.raises(BlobNotFoundError):
            blobs.store.open_range("gone.mp4")

    @pytest.mark.parametrize(
        "key", ["../escape.mp4", "/etc/passwd", "a/../../b", "a//b", ".hidden", "a/.meta", "", "a b", "a/"]
    )
    def test_unsafe_keys_are_rejected(self, blobs: StoreUnderTest, key: str) -> None:
        with pytest.raises(InvalidBlobKeyError):
            blobs.store.put_stream(key, [b"data"], content_type=VIDEO)
        with pytest.raises(InvalidBlobKeyError):
            blobs.store.stat(key)
        with pytest.raises(InvalidBlobKeyError):
            blobs.store.open_range(key)
        with pytest.raises(InvalidBlobKeyError):
            blobs.store.delete(key)
        if blobs.root is not None:
            assert not (blobs.root.parent / "escape.mp4").exists()

    def test_check_passes_when_reachable(self, blobs: StoreUnderTest) -> None:
        blobs.store.check()

    @pytest.mark.slow
    def test_200_mib_put_streams_in_bounded_memory(self, blobs: StoreUnderTest) -> None:
        total = 200 * MIB
        expected = hashlib.sha256()

        def generated() -> Iterator[bytes]:
            block = MIB
            for index in range(total // block):
                chunk = index.to_bytes(8, "big") * (block // 8)
                expected.update(chunk)
                yield chunk

        tracemalloc.start()
        try:
            tracemalloc.reset_peak()
            ref = blobs.store.put_stream("stream.mp4", generated(), content_type=VIDEO)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()

        assert (ref.size, ref.sha256) == (total, expected.hexdigest())
        assert peak < 32 * MIB, f"peak {peak / MIB:.1f} MiB while storing 200 MiB"
        assert blobs.store.stat("stream.mp4") == ref


class TestFaults:
    def test_unreachable_s3_fails_fast_as_transient(self, moto_endpoint: str) -> None:  # noqa: F811
        closed = f"http://127.0.0.1:{free_loopback_port()}"
        store = S3BlobStore("any", endpoint_url=closed, connect_timeout=1, read_timeout=1, max_attempts=1)

        began = time.monotonic()
        with pytest.raises(TransientMediaError) as raised:
            store.check()
        with pytest.raises(TransientMediaError):
            store.put_stream("a.mp4", [b"data"], content_type=VIDEO)
        with pytest.raises(TransientMediaError):
            store.stat("a.mp4")

        assert raised.value.code == "storage_unavailable"
        assert time.monotonic() - began < 5

    def test_missing_bucket_fails_check_unless_created_on_demand(self, moto_endpoint: str) -> None:  # noqa: F811
        bucket = f"absent-{uuid.uuid4().hex[:12]}"
        with pytest.raises(TransientMediaError):
            S3BlobStore(bucket, endpoint_url=moto_endpoint, max_attempts=1).check()

        S3BlobStore(bucket, endpoint_url=moto_endpoint, create_bucket=True).check()
        S3BlobStore(bucket, endpoint_url=moto_endpoint).check()

    def test_unusable_directory_is_transient(self, tmp_path: Path) -> None:
        (tmp_path / "not-a-dir").write_bytes(b"")
        store = FilesystemBlobStore(tmp_path / "not-a-dir" / "blobs")

        with pytest.raises(TransientMediaError) as raised:
            store.check()
        with pytest.raises(TransientMediaError):
            store.put_stream("a.mp4", [b"data"], content_type=VIDEO)

        assert raised.value.code == "storage_unavailable"


class TestStoreSpecifics:
    def test_small_s3_body_is_one_put(self, moto_endpoint: str) -> None:  # noqa: F811
        store = s3_store(moto_endpoint)
        ref = store.put_stream("small.mp4", chunked(body(PART_SIZE - 1), MIB), content_type=VIDEO)

        head = store.client.head_object(Bucket=store.bucket, Key="tenant/videos/small.mp4")
        assert "-" not in head["ETag"]
        assert head["Metadata"]["sha256"] == ref.sha256
        assert ref.uri == f"s3://{store.bucket}/tenant/videos/small.mp4"

    def test_bucket_created_on_demand_outside_us_east_1(self, moto_endpoint: str) -> None:  # noqa: F811
        store = S3BlobStore(
            f"eu-{uuid.uuid4().hex[:12]}", endpoint_url=moto_endpoint, region_name="eu-west-1", create_bucket=True
        )

        store.put_stream("k.bin", [b"v"], content_type="application/octet-stream")

        location = store.client.get_bucket_location(Bucket=store.bucket)["LocationConstraint"]
        assert location == "eu-west-1"

    def test_filesystem_rebuilds_lost_metadata(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path)
        ref = store.put_stream("a/b.mp4", [b"payload"], content_type=VIDEO)
        (tmp_path / "a" / ".b.mp4.meta.json").unlink()

        rebuilt = store.stat("a/b.mp4")

        assert rebuilt is not None
        assert (rebuilt.size, rebuilt.sha256) == (ref.size, ref.sha256)
        assert rebuilt.content_type == "application/octet-stream"
        assert ref.uri == (tmp_path / "a" / "b.mp4").as_uri()

    def test_filesystem_files_land_under_the_root_only(self, tmp_path: Path) -> None:
        store = FilesystemBlobStore(tmp_path / "root")
        store.put_stream("x/y/z.bin", [b"1", b"2"], content_type="application/octet-stream")

        files = sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*") if path.is_file())

        assert files == ["root/x/y/.z.bin.meta.json", "root/x/y/z.bin"]


class TestBlobStoreFromUrl:
    def test_relative_file_url(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.chdir(tmp_path)
        store = blob_store_from_url("file://data/blobs")

        ref = store.put_stream("k.bin", [b"v"], content_type="application/octet-stream")

        assert (tmp_path / "data" / "blobs" / "k.bin").read_bytes() == b"v"
        assert ref.uri == (tmp_path / "data" / "blobs" / "k.bin").as_uri()

    def test_absolute_file_url(self, tmp_path: Path) -> None:
        store = blob_store_from_url(f"file://{tmp_path}/abs")

        store.put_stream("k.bin", [b"v"], content_type="application/octet-stream")

        assert os.path.isfile(tmp_path / "abs" / "k.bin")

    def test_s3_url(self, moto_endpoint: str) -> None:  # noqa: F811
        bucket = f"url-{uuid.uuid4().hex[:12]}"
        store = blob_store_from_url(f"s3://{bucket}/media/v1", s3_endpoint_url=moto_endpoint, s3_create_bucket=True)

        ref = store.put_stream("k.bin", [b"v"], content_type="application/octet-stream")

        assert ref.uri == f"s3://{bucket}/media/v1/k.bin"
        assert read_all(store.open_range("k.bin")) == b"v"

    @pytest.mark.parametrize("url", ["http://example.invalid/x", "s3:///prefix", "file://", "data/blobs"])
    def test_unsupported_urls(self, url: str) -> None:
        with pytest.raises(ValueError):
            blob_store_from_url(url)
