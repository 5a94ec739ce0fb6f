"""Blob store adapters, chosen by URL: ``file://DIR`` or ``s3://BUCKET/PREFIX``."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from application.ports.blob_store import MIB, BlobStore
from infrastructure.blobs.filesystem import FilesystemBlobStore
from infrastructure.blobs.s3 import S3BlobStore

DEFAULT_BLOB_URL = "file://data/blobs"

__all__ = ["DEFAULT_BLOB_URL", "FilesystemBlobStore", "S3BlobStore", "blob_store_from_url"]


def blob_store_from_url(
    url: str,
    *,
    s3_endpoint_url: str | None = None,
    s3_region: str = "us-east-1",
    s3_part_size: int = 8 * MIB,
    s3_create_bucket: bool = False,
    s3_connect_timeout: float = 5.0,
    s3_read_timeout: float = 60.0,
    s3_max_attempts: int = 3,
) -> BlobStore:
    """Build the store a URL names.

    ``file://data/blobs`` is relative to the working directory, ``file:///srv/blobs`` absolute.
    ``s3://bucket/some/prefix`` stores keys under ``some/prefix/`` in ``bucket``; credentials come from
    boto3's usual chain (environment, shared files, instance role).
    """
    if url.startswith("file://"):
        path = unquote(url.removeprefix("file://"))
        if not path:
            raise ValueError(f"blob URL names no directory: {url!r}")
        return FilesystemBlobStore(Path(path))
    parts = urlsplit(url)
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ValueError(f"blob URL names no bucket: {url!r}")
        return S3BlobStore(
            parts.netloc,
            unquote(parts.path),
            endpoint_url=s3_endpoint_url,
            region_name=s3_region,
            part_size=s3_part_size,
            create_bucket=s3_create_bucket,
            connect_timeout=s3_connect_timeout,
            read_timeout=s3_read_timeout,
            max_attempts=s3_max_attempts,
        )
    raise ValueError(f"unsupported blob URL {url!r}: use file://DIR or s3://BUCKET/PREFIX")
