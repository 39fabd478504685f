"""S3-compatible backend (Tigris, AWS S3, SeaweedFS) over aiobotocore.

Writes are create-only through ``If-None-Match: *`` on PutObject and on
CompleteMultipartUpload; objects over :data:`MULTIPART_THRESHOLD_BYTES` go as
a multipart upload, aborted when it fails. Every call goes through
:class:`~archiver.storage.s3_client.S3Client`: bounded retries on throttling,
5xx and connection errors; after that a StorageError goes up to the service,
which retries forever. Error messages are built from error codes, statuses,
the bucket, the key and the endpoint only, so credentials and signed URLs
never reach them.
"""

from __future__ import annotations

import asyncio
import builtins
import functools
import os
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from botocore import exceptions as boto

from archiver.errors import ConflictError, ObjectExistsError, StorageError, StorageUnavailableError
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.keys import validate_key, validate_prefix
from archiver.storage.s3_client import (
    CONNECT_TIMEOUT_S,
    MAX_ATTEMPTS,
    READ_TIMEOUT_S,
    S3Client,
    backoff_s,
    error_code,
    http_status,
)

if TYPE_CHECKING:
    import pyarrow.fs

    from archiver.config import ArchiveSettings

#: Objects larger than this are sent as a multipart upload.
MULTIPART_THRESHOLD_BYTES = 16 * 1024**2
PART_SIZE_BYTES = 8 * 1024**2
PART_CONCURRENCY = 4
ABORT_TIMEOUT_S = 10.0
DELETE_BATCH = 1000
#: Bytes read from a GET's body at once by get_file.
GET_CHUNK_BYTES = 1024**2
#: Reads ``length`` bytes of the object being put from ``start`` (fewer at its end).
Read = Callable[[int, int], Awaitable[bytes]]


class S3Storage(Storage):
    """Create-only object storage under ``s3://bucket/prefix``."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self._s3 = S3Client(settings)
        self._bucket = settings.bucket
        self._base = self._s3.base
        self.url = settings.url

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` only if nothing is there; ObjectExistsError otherwise."""
        view = memoryview(data)

        async def read(start: int, length: int) -> bytes:
            # Copy a part only once it may be sent, so memory stays bounded by the concurrency.
            return data if start == 0 and length >= len(data) else bytes(view[start : start + length])

        await self._put(key, len(data), read)

    async def put_file(self, key: str, path: str) -> None:
        """Store the local file ``path`` at ``key`` only if nothing is there, read a part at a time."""
        size = await asyncio.to_thread(os.path.getsize, path)

        async def read(start: int, length: int) -> bytes:
            return await asyncio.to_thread(_read_range, path, start, length)

        await self._put(key, size, read)

    async def _put(self, key: str, size: int, read: Read) -> None:
        full = self._base + validate_key(key)
        # AWS answers 409 when conditional writes of one key overlap and asks for a retry from scratch;
        # the retry then learns the truth (412 or success).
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                if size > MULTIPART_THRESHOLD_BYTES:
                    await self._put_multipart(key, full, size, read)
                else:
                    body = await read(0, size)
                    await self._s3.op("PutObject", key, Key=full, Body=body, IfNoneMatch="*")
                return
            except ConflictError:
                if attempt == MAX_ATTEMPTS:
                    raise
            await asyncio.sleep(backoff_s(attempt))

    async def _put_multipart(self, key: str, full: str, size: int, read: Read) -> None:
        upload_id = (await self._s3.op("CreateMultipartUpload", key, Key=full))["UploadId"]
        try:
            parts = await self._upload_parts(key, full, upload_id, size, read)
            complete = functools.partial(self._complete, full, upload_id, parts)
            await self._s3.call("CompleteMultipartUpload", key, complete)
        except BaseException:
            # Best effort even when cancelled: bucket lifecycle rules collect what an abort misses.
            with suppress(Exception):
                async with asyncio.timeout(ABORT_TIMEOUT_S):
                    await self._s3.op("AbortMultipartUpload", key, attempts=2, Key=full, UploadId=upload_id)
            raise

    async def _upload_parts(
        self, key: str, full: str, upload_id: str, size: int, read: Read
    ) -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(PART_CONCURRENCY)

        async def upload(number: int, start: int) -> dict[str, Any]:
            async with limit:
                body = await read(start, PART_SIZE_BYTES)
                params: dict[str, Any] = {
                    "Key": full,
                    "UploadId": upload_id,
                    "PartNumber": number,
                    "Body": body,
                }
                result = await self._s3.op("UploadPart", key, **params)
            return {"ETag": result["ETag"], "PartNumber": number}

        starts = range(0, size, PART_SIZE_BYTES)
        tasks = [asyncio.ensure_future(upload(n, start)) for n, start in enumerate(starts, 1)]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _complete(self, full: str, upload_id: str, parts: list[dict[str, Any]]) -> Any:
        client = await self._s3.client()
        try:
            return await client.complete_multipart_upload(
                Bucket=self._bucket,
                Key=full,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except boto.ClientError as exc:
            # A retried complete whose first try succeeded (response lost) finds the upload gone.
            if error_code(exc) == "NoSuchUpload" and await self._exists(full):
                raise ObjectExistsError(f"s3://{self._bucket}/{full} already exists") from exc
            raise

    async def _exists(self, full: str) -> bool:
        try:
            await (await self._s3.client()).head_object(Bucket=self._bucket, Key=full)
        except boto.ClientError as exc:
            if http_status(exc) == 404:
                return False
            raise
        return True

    async def get(self, key: str) -> bytes:
        """Whole object; ObjectNotFoundError when missing."""
        full = self._base + validate_key(key)
        client = await self._s3.client()

        async def fetch() -> bytes:
            response = await client.get_object(Bucket=self._bucket, Key=full)
            async with response["Body"] as body:
                return bytes(await body.read())

        return await self._s3.call("GetObject", key, fetch)

    async def get_file(self, key: str, path: str) -> None:
        """Write the object at ``key`` to the new local file ``path``, a chunk at a time."""
        full = self._base + validate_key(key)
        client = await self._s3.client()

        async def fetch() -> None:
            response = await client.get_object(Bucket=self._bucket, Key=full)
            out = await asyncio.to_thread(open, path, "wb")  # a retry starts the file again
            try:
                async with response["Body"] as body:
                    async for chunk in body.iter_chunks(GET_CHUNK_BYTES):
                        await asyncio.to_thread(out.write, chunk)
            finally:
                await asyncio.to_thread(out.close)

        await self._s3.call("GetObject", key, fetch)

    async def _pages(self, op_key: str, **params: Any) -> list[dict[str, Any]]:
        pages = [await self._s3.op("ListObjectsV2", op_key, **params)]
        while pages[-1].get("IsTruncated") and pages[-1].get("NextContinuationToken"):
            params["ContinuationToken"] = pages[-1]["NextContinuationToken"]
            pages.append(await self._s3.op("ListObjectsV2", op_key, **params))
        return pages

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key."""
        pages = await self._pages(validate_prefix(prefix), Prefix=self._base + prefix)
        found = [
            ObjectInfo(item["Key"][len(self._base) :], int(item["Size"]))
            for page in pages
            for item in page.get("Contents", [])
            # Folder markers made by consoles are not objects of the archive.
            if item["Key"].startswith(self._base + prefix) and not item["Key"].endswith("/")
        ]
        found.sort(key=lambda info: info.key)
        return found

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Immediate sub-prefixes of ``prefix`` (each ending in ``/``), sorted; one delimiter listing."""
        pages = await self._pages(validate_prefix(prefix), Prefix=self._base + prefix, Delimiter="/")
        return sorted(
            common["Prefix"][len(self._base) :]
            for page in pages
            for common in page.get("CommonPrefixes", [])
            if common["Prefix"].startswith(self._base + prefix)
        )

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the keys in batches of 1000; missing keys are not an error."""
        full_keys = [self._base + validate_key(key) for key in keys]
        if not full_keys:
            return
        for start in range(0, len(full_keys), DELETE_BATCH):
            batch = [{"Key": key} for key in full_keys[start : start + DELETE_BATCH]]
            response = await self._s3.op(
                "DeleteObjects", keys[start], Delete={"Objects": batch, "Quiet": True}
            )
            errors = [e for e in response.get("Errors", []) if e.get("Code") != "NoSuchKey"]
            if errors:
                first = errors[0]
                raise StorageError(
                    f"S3 DeleteObjects failed for {len(errors)} keys in s3://{self._bucket}, "
                    f"first s3://{self._bucket}/{first.get('Key')}: {first.get('Code')}"
                )

    async def check(self) -> None:
        """Raise StorageUnavailableError when the endpoint, bucket or credentials do not work."""
        try:
            await self._s3.op("HeadBucket", None, attempts=1)
        except StorageUnavailableError:
            raise
        except StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    async def close(self) -> None:
        """Close the client and its connection pool."""
        await self._s3.close()


def pyarrow_filesystem(settings: ArchiveSettings) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow S3FileSystem for the same endpoint and credentials, and the base path ``bucket/prefix``."""
    import pyarrow.fs

    from archiver.storage.http_transport import proxy_for

    s3 = settings.s3
    options: dict[str, Any] = {
        "region": s3.region,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "request_timeout": READ_TIMEOUT_S,
        "retry_strategy": pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=MAX_ATTEMPTS),
    }
    if s3.access_key_id and s3.secret_access_key:
        options["access_key"] = s3.access_key_id
        options["secret_key"] = s3.secret_access_key
    if s3.endpoint_url:
        parts = urlsplit(s3.endpoint_url)
        options["endpoint_override"] = parts.netloc.rpartition("@")[2]
        options["scheme"] = parts.scheme
        proxy = proxy_for(s3, s3.endpoint_url)
        if proxy is not None:
            options["proxy_options"] = proxy
    if s3.ca_bundle:
        options["tls_ca_file_path"] = s3.ca_bundle
    base = f"{settings.bucket}/{settings.prefix}" if settings.prefix else settings.bucket
    return pyarrow.fs.S3FileSystem(**options), base


def _read_range(path: str, start: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(length)
