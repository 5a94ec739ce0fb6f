"""A blob store in an S3-compatible bucket (boto3).

A body smaller than one part is sent with a single PutObject. A larger one goes up as a multipart upload
with parts of ``part_size`` bytes; the client holds less than one part of buffered bytes (plus one incoming
chunk) and the part being sent, so memory does not grow with the body. S3 shows
nothing under the key until CompleteMultipartUpload succeeds, so the in-progress upload is the temporary
key; on any failure the upload is aborted and the previous object, if any, stays.

The sha256 is kept as object metadata (``x-amz-meta-sha256``). A multipart upload cannot know it when it
starts, so after completing, the object is copied onto itself with the metadata added, guarded by the
ETag just completed (a concurrent overwrite wins and is left alone). Objects over 5 GiB, the CopyObject
limit, and objects whose copy failed report an empty sha256 from ``stat``; ``put_stream`` always returns it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

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

logger = logging.getLogger(__name__)

MIN_PART_SIZE = 5 * MIB
MAX_COPY_SIZE = 5 * 1024 * MIB
SHA256_METADATA = "sha256"


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _unavailable(key: str, error: Exception) -> TransientMediaError:
    details: dict[str, Any] = {"key": key}
    if isinstance(error, ClientError):
        details.update(s3_code=_error_code(error), status=_status(error))
    return TransientMediaError("storage_unavailable", f"S3 request failed: {error}", details=details)


@contextlib.contextmanager
def _storage_faults(key: str) -> Iterator[None]:
    """Turn S3 and connection errors into ``TransientMediaError("storage_unavailable")``."""
    try:
        yield
    except (BotoCoreError, ClientError) as error:
        raise _unavailable(key, error) from error


class S3BlobStore:
    """Blobs as objects ``PREFIX/KEY`` in ``bucket``."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region_name: str = "us-east-1",
        part_size: int = 8 * MIB,
        chunk_size: int = MIB,
        create_bucket: bool = False,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 3,
        client: Any | None = None,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (S3's minimum part size)")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.chunk_size = chunk_size
        self.create_bucket = create_bucket
        self._bucket_ready = not create_bucket
        self.client = client or boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region_name,
            config=Config(
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
            ),
        )

    def _object_key(self, key: str) -> str:
        check_blob_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _uri(self, object_key: str) -> str:
        return f"s3://{self.bucket}/{object_key}"

    def _ensure_bucket(self) -> None:
        if self._bucket_ready:
            return
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as error:
            if _status(error) != 404:
                raise
            region = self.client.meta.region_name
            if region and region != "us-east-1":
                self.client.create_bucket(Bucket=self.bucket, CreateBucketConfiguration={"LocationConstraint": region})
            else:
                self.client.create_bucket(Bucket=self.bucket)
        self._bucket_ready = True

    def put_stream(
        self,
        key: str,
        chunks: Iterable[bytes],
        *,
        content_type: str,
        max_bytes: int | None = None,
    ) -> BlobRef:
        object_key = self._object_key(key)
        with _storage_faults(key):
            self._ensure_bucket()
        meter = BodyMeter(max_bytes)
        buffer = bytearray()
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            for chunk in meter.measure(chunks):
                buffer += chunk
                while len(buffer) >= self.part_size:
                    if upload_id is None:
                        with _storage_faults(key):
                            upload_id = self.client.create_multipart_upload(
                                Bucket=self.bucket, Key=object_key, ContentType=content_type
                            )["UploadId"]
                    with memoryview(buffer) as view:
                        part = view[: self.part_size].tobytes()
                    del buffer[: self.part_size]
                    parts.append(self._upload_part(key, object_key, upload_id, len(parts) + 1, part))
                    del part
            sha256 = meter.sha256
            if upload_id is None:
                with _storage_faults(key):
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=object_key,
                        Body=bytes(buffer),
                        ContentType=content_type,
                        Metadata={SHA256_METADATA: sha256},
                    )
            else:
                if buffer:
                    parts.append(self._upload_part(key, object_key, upload_id, len(parts) + 1, bytes(buffer)))
                    buffer.clear()
                with _storage_faults(key):
                    etag = self.client.complete_multipart_upload(
                        Bucket=self.bucket,
                        Key=object_key,
                        UploadId=upload_id,
                        MultipartUpload={"Parts": parts},
                    )["ETag"]
                upload_id = None
                self._record_sha256(object_key, etag, meter.size, sha256, content_type)
        except BaseException:
            if upload_id is not None:
                self._abort(object_key, upload_id)
            raise
        return BlobRef(
            uri=self._uri(object_key), key=key, size=meter.size, sha256=meter.sha256, content_type=content_type
        )

    def _upload_part(self, key: str, object_key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        with _storage_faults(key):
            response = self.client.upload_part(
                Bucket=self.bucket, Key=object_key, UploadId=upload_id, PartNumber=number, Body=body
            )
        return {"PartNumber": number, "ETag": response["ETag"]}

    def _abort(self, object_key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=object_key, UploadId=upload_id)
        except (BotoCoreError, ClientError):
            logger.warning("could not abort multipart upload %s of %s", upload_id, object_key, exc_info=True)

    def _record_sha256(self, object_key: str, etag: str, size: int, sha256: str, content_type: str) -> None:
        """Copy the completed object onto itself with its sha256 as metadata, if it is still ours."""
        if size > MAX_COPY_SIZE:
            return
        try:
            self.client.copy_object(
                Bucket=self.bucket,
                Key=object_key,
                CopySource={"Bucket": self.bucket, "Key": object_key},
                CopySourceIfMatch=etag,
                MetadataDirective="REPLACE",
                Metadata={SHA256_METADATA: sha256},
                ContentType=content_type,
            )
        except (BotoCoreError, ClientError):
            logger.warning("could not record sha256 metadata on %s", object_key, exc_info=True)

    def open_range(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        check_byte_range(start, end)
        object_key = self._object_key(key)
        request: dict[str, Any] = {"Bucket": self.bucket, "Key": object_key}
        if start or end is not None:
            request["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            body = self.client.get_object(**request)["Body"]
        except ClientError as error:
            if _status(error) == 404:
                raise BlobNotFoundError(key) from error
            if _status(error) == 416:
                raise BlobRangeError(f"range starts at {start}, past the end of {key}") from error
            raise _unavailable(key, error) from error
        except BotoCoreError as error:
            raise _unavailable(key, error) from error
        return self._read(body, key)

    def _read(self, body: Any, key: str) -> Iterator[bytes]:
        try:
            with _storage_faults(key):
                yield from body.iter_chunks(self.chunk_size)
        finally:
            body.close()

    def stat(self, key: str) -> BlobRef | None:
        object_key = self._object_key(key)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=object_key)
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise _unavailable(key, error) from error
        except BotoCoreError as error:
            raise _unavailable(key, error) from error
        return BlobRef(
            uri=self._uri(object_key),
            key=key,
            size=int(head["ContentLength"]),
            sha256=head.get("Metadata", {}).get(SHA256_METADATA, ""),
            content_type=head.get("ContentType", "application/octet-stream"),
        )

    def delete(self, key: str) -> None:
        object_key = self._object_key(key)
        with _storage_faults(key):
            self.client.delete_object(Bucket=self.bucket, Key=object_key)

    def check(self) -> None:
        with _storage_faults(""):
            if self.create_bucket:
                self._ensure_bucket()
            else:
                self.client.head_bucket(Bucket=self.bucket)
