"""Talking to S3 for :class:`~archiver.storage.s3.S3Storage`: the aiobotocore client, retries, error conversion.

The client is created on first use. Each call is retried a bounded number of
times on throttling, 5xx and connection errors (on top of botocore's own
retries), with full-jitter backoff; what still fails leaves as the project's
:class:`~archiver.errors.StorageError` (answers mapped by
:mod:`archiver.storage.s3_errors`), built from error codes, statuses, the
bucket, the key and the endpoint only, so credentials and signed URLs never
reach it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

import aiohttp
from aiobotocore.session import get_session
from botocore import exceptions as boto
from botocore import xform_name
from botocore.config import Config

from archiver.errors import StorageError, StorageUnavailableError
from archiver.storage.s3_errors import THROTTLE_CODES, answer_error

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings

#: Our attempts per call; each is up to BOTOCORE_MAX_ATTEMPTS requests (botocore standard retries).
MAX_ATTEMPTS = 5
BOTOCORE_MAX_ATTEMPTS = 3
RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
MAX_POOL_CONNECTIONS = 32

_TRANSPORT_ERRORS = (boto.ConnectionError, boto.HTTPClientError, aiohttp.ClientError, TimeoutError)

_log = logging.getLogger("archiver.storage.s3")  # the S3 backend's logger, as before the client had a module
T = TypeVar("T")


def error_code(exc: boto.ClientError) -> str:
    """The S3 error code of an answer (``NoSuchKey``), or ``""``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def http_status(exc: boto.ClientError) -> int:
    """The HTTP status of an answer, or 0."""
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, boto.ClientError):
        status = http_status(exc)
        return status >= 500 or status == 429 or error_code(exc) in THROTTLE_CODES
    return isinstance(exc, _TRANSPORT_ERRORS)


def backoff_s(attempt: int) -> float:
    """Full-jitter exponential backoff, so many writers retrying at once spread out."""
    return random.uniform(0, min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** (attempt - 1)))


def display_endpoint(endpoint_url: str | None, region: str) -> str:
    """The endpoint as safe to show: scheme, host, port and path, never userinfo."""
    if not endpoint_url:
        return f"AWS S3 ({region})"
    parts = urlsplit(endpoint_url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path.rstrip('/')}"


class S3Client:
    """Calls on one bucket, with retries; every failure leaves as a StorageError naming ``s3://bucket/key``."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.bucket = settings.bucket
        self.base = f"{settings.prefix}/" if settings.prefix else ""
        self.endpoint = display_endpoint(settings.s3.endpoint_url, settings.s3.region)
        self._s3 = settings.s3
        self._client: Any = None
        self._stack: AsyncExitStack | None = None
        self._lock = asyncio.Lock()

    async def client(self) -> Any:
        """The aiobotocore client, created on first use; StorageUnavailableError when it cannot be."""
        if self._client is not None:
            return self._client
        async with self._lock:
            if self._client is None:
                s3 = self._s3
                config = Config(
                    retries={"mode": "standard", "total_max_attempts": BOTOCORE_MAX_ATTEMPTS},
                    connect_timeout=CONNECT_TIMEOUT_S,
                    read_timeout=READ_TIMEOUT_S,
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    # S3-compatible servers (SeaweedFS, MinIO) rarely have wildcard DNS for buckets.
                    s3={"addressing_style": "path"} if s3.endpoint_url else None,
                )
                stack = AsyncExitStack()
                try:
                    self._client = await stack.enter_async_context(
                        get_session().create_client(
                            "s3",
                            endpoint_url=s3.endpoint_url,
                            region_name=s3.region,
                            aws_access_key_id=s3.access_key_id,
                            aws_secret_access_key=s3.secret_access_key,
                            config=config,
                        )
                    )
                except (boto.BotoCoreError, ValueError) as exc:
                    raise StorageUnavailableError(f"cannot set up an S3 client for {self.endpoint}") from exc
                self._stack = stack
        return self._client

    def _where(self, key: str | None) -> str:
        return f"s3://{self.bucket}/{self.base}{key}" if key is not None else f"s3://{self.bucket}"

    def _convert(self, exc: BaseException, op: str, key: str | None) -> StorageError:
        where = self._where(key)
        if isinstance(exc, boto.ClientError):
            code, status = error_code(exc), http_status(exc)
            return answer_error(op, code, status, bucket=self.bucket, endpoint=self.endpoint, where=where)
        if isinstance(exc, (boto.NoCredentialsError, boto.PartialCredentialsError)):
            return StorageUnavailableError("no S3 credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
        if isinstance(
            exc, (boto.EndpointConnectionError, boto.ConnectTimeoutError, aiohttp.ClientConnectorError)
        ):
            return StorageUnavailableError(f"cannot reach {self.endpoint}")
        return StorageError(f"S3 {op} failed for {where}: {type(exc).__name__}")

    async def call(
        self, op: str, key: str | None, fn: Callable[[], Awaitable[T]], attempts: int = MAX_ATTEMPTS
    ) -> T:
        """Run one S3 call, retrying transient failures with backoff; errors leave as StorageError."""
        attempt = 1
        while True:
            try:
                return await fn()
            except StorageError:  # already translated (e.g. by S3Storage._complete)
                raise
            except (boto.ClientError, boto.BotoCoreError, aiohttp.ClientError, TimeoutError) as exc:
                error = self._convert(exc, op, key)
                if attempt >= attempts or not _is_transient(exc):
                    raise error from exc
                _log.debug("retrying S3 %s (attempt %d/%d): %s", op, attempt, attempts, error)
            await asyncio.sleep(backoff_s(attempt))
            attempt += 1

    async def op(self, op: str, key: str | None, *, attempts: int = MAX_ATTEMPTS, **params: Any) -> Any:
        """Call the S3 operation ``op`` (``PutObject``) on our bucket with retries (see :meth:`call`)."""
        method = getattr(await self.client(), xform_name(op))
        return await self.call(op, key, functools.partial(method, Bucket=self.bucket, **params), attempts)

    async def close(self) -> None:
        """Close the client and its connection pool."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            await stack.aclose()
