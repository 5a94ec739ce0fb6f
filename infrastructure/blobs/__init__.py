"""Blob stores: adapters of the `BlobStore` port, chosen by MEDIATASKS_BLOB_URL."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from application.ports.blob_store import BlobStore


def blob_store_from_url(url: str, *, s3_endpoint_url: str | None = None, s3_region: str = "us-east-1") -> BlobStore:
    """`file://DIR` (relative or absolute) or `s3://BUCKET/PREFIX`."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        from infrastructure.blobs.filesystem import FilesystemBlobStore

        return FilesystemBlobStore(Path(parts.netloc + parts.path))
    if parts.scheme == "s3":
        from infrastructure.blobs.s3 import S3BlobStore

        return S3BlobStore(bucket=parts.netloc, prefix=parts.path.lstrip("/"), endpoint_url=s3_endpoint_url,
                           region=s3_region)
    raise ValueError(f"MEDIATASKS_BLOB_URL must be file://DIR or s3://BUCKET/PREFIX, not {url!r}")
