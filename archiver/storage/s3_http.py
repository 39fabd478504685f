"""S3 reads over plain SigV4-signed HTTP (stdlib only), for short read-mostly commands like ``archiver query``.

Importing aiobotocore and creating its client costs ~0.25 s of CPU, more than
a whole ``query --since 1h``; its per-request path (event hooks, signing and
response parsing in Python) costs another ~1 ms per GET. This backend speaks
the four read operations a query needs (GetObject, ListObjectsV2, HeadBucket;
HeadObject is not needed) with ``http.client``: one keep-alive connection per
worker thread, requests signed with AWS Signature Version 4, path-style
addressing as :class:`~archiver.storage.s3.S3Storage` uses for custom
endpoints. Writes and deletes go to an :class:`~archiver.storage.s3.S3Storage`
made on first use, so the whole Storage contract holds.

TLS trusts the system's CAs or those of ``AWS_CA_BUNDLE``; ``HTTPS_PROXY``,
``HTTP_PROXY`` and ``NO_PROXY`` are honoured (:mod:`archiver.storage.http_transport`).
It is used only with an explicit endpoint and explicit keys (see
:func:`archiver.storage.open.open_read_storage`): it never looks for credentials
elsewhere and contacts nothing but the endpoint. Errors become the same
:mod:`archiver.errors` with the same texts as S3Storage's (codes, statuses,
bucket, key and endpoint only: never keys, signatures or URLs with them).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import datetime
import hashlib
import hmac
import http.client
import random
import ssl
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_plus, urlsplit
from xml.etree import ElementTree

from archiver.errors import StorageError, StorageUnavailableError
from archiver.storage.http_transport import transport
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.keys import validate_key, validate_prefix
from archiver.storage.s3_errors import THROTTLE_CODES, answer_error

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings

#: Same bounds as S3Storage: our attempts, each up to botocore's 3 requests there (here: one).
MAX_ATTEMPTS = 5 * 3
RETRY_BASE_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 10.0
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60
#: Keys per ListObjectsV2 page (S3's maximum; tests lower it to exercise continuation).
LIST_PAGE_KEYS = 1000
#: Worker threads, each with its own connection: requests in flight at once.
THREADS = 16
_EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class _Failure(Exception):
    """An S3 error answer: its code and HTTP status."""

    def __init__(self, code: str, status: int) -> None:
        super().__init__(code)
        self.code, self.status = code, status


def _xml(body: bytes) -> ElementTree.Element:
    # Answers of the configured endpoint only; botocore parses them with this same parser (expat,
    # no external entities, entity expansion limited since expat 2.4).
    return ElementTree.fromstring(body)  # noqa: S314


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, _Failure):
        return exc.status >= 500 or exc.status == 429 or exc.code in THROTTLE_CODES
    return isinstance(exc, (OSError, http.client.HTTPException))


class S3HttpStorage(Storage):
    """Reads of ``s3://bucket/prefix`` over signed HTTP; writes delegated to S3Storage."""

    def __init__(self, settings: ArchiveSettings) -> None:
        s3 = settings.s3
        if not (s3.endpoint_url and s3.access_key_id and s3.secret_access_key):
            raise ValueError("S3HttpStorage needs an endpoint URL and explicit keys")
        self._settings = settings
        self._bucket = settings.bucket
        self._base = f"{settings.prefix}/" if settings.prefix else ""
        self.url = settings.url
        parts = urlsplit(s3.endpoint_url)
        self._host = parts.netloc.rpartition("@")[2]  # userinfo is never sent nor shown
        self._transport = transport(s3.endpoint_url, s3)  # AWS_CA_BUNDLE and proxies (http_transport)
        self._path = f"{parts.path.rstrip('/')}/{quote(self._bucket, safe='')}"
        self._endpoint = f"{parts.scheme}://{self._host}{parts.path.rstrip('/')}"
        self._region = s3.region
        self._key_id = s3.access_key_id
        self._secret = s3.secret_access_key
        self._signing: tuple[str, bytes] | None = None
        self._local = threading.local()
        self._closed = threading.Event()
        self._connections: list[http.client.HTTPConnection] = []
        self._pool: ThreadPoolExecutor | None = None
        self._writer: Storage | None = None

    # --- signed requests (in worker threads) -----------------------------------------------------

    def _signing_key(self, day: str) -> bytes:
        cached = self._signing
        if cached is not None and cached[0] == day:
            return cached[1]
        key = f"AWS4{self._secret}".encode()
        for part in (day, self._region, "s3", "aws4_request"):
            key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        self._signing = (day, key)
        return key

    def _headers(self, method: str, path: str, query: str) -> dict[str, str]:
        now = datetime.datetime.now(datetime.UTC)
        stamp, day = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        headers = {"host": self._host, "x-amz-content-sha256": _EMPTY_SHA256, "x-amz-date": stamp}
        names = ";".join(headers)
        canonical = "\n".join(
            [method, path, query, *(f"{k}:{v}" for k, v in headers.items()), "", names, _EMPTY_SHA256]
        )
        scope = f"{day}/{self._region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        headers["authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._key_id}/{scope}, SignedHeaders={names}, Signature={signature}"
        )
        return headers

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._transport.connect(CONNECT_TIMEOUT_S)
            self._local.conn = conn
            self._connections.append(conn)
        if conn.sock is None:
            conn.connect()
            conn.sock.settimeout(READ_TIMEOUT_S)  # type: ignore[attr-defined]  # connect() set it
        return conn

    def _once(self, method: str, path: str, params: dict[str, str]) -> tuple[int, bytes]:
        # Canonical query: sorted, every reserved character escaped (SigV4); the same string is sent.
        query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(params.items()))
        headers = self._headers(method, path, query)
        conn = self._connection()
        target = f"{path}?{query}" if query else path
        if self._transport.absolute_urls:
            target = f"http://{self._host}{target}"  # through a plain-http proxy
        try:
            conn.request(method, target, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except BaseException:
            conn.close()  # a half-read response must not be reused
            raise
        if response.status >= 300:
            code = ""
            with contextlib.suppress(ElementTree.ParseError):
                code = (_xml(body).findtext("Code") or "") if body else ""
            raise _Failure(code, response.status)
        return response.status, body

    def _request(self, op: str, key: str | None, method: str, path: str, params: dict[str, str]) -> bytes:
        """One S3 call with bounded retries of transient failures; errors leave as StorageError."""
        attempt = 1
        while True:
            try:
                return self._once(method, path, params)[1]
            except (_Failure, OSError, http.client.HTTPException) as exc:
                if attempt >= MAX_ATTEMPTS or not _transient(exc) or op == "HeadBucket":
                    raise self._convert(exc, op, key) from None
                delay_s = random.uniform(0, min(RETRY_MAX_DELAY_S, RETRY_BASE_DELAY_S * 2 ** (attempt - 1)))
                # A closed storage retries no more: the process would otherwise wait at exit for this
                # thread (a minute against an endpoint that is down, after the error was printed).
                if self._closed.wait(delay_s):
                    raise self._convert(exc, op, key) from None
            attempt += 1

    def _convert(self, exc: BaseException, op: str, key: str | None) -> StorageError:
        where = f"s3://{self._bucket}/{self._base}{key}" if key is not None else f"s3://{self._bucket}"
        if isinstance(exc, _Failure):
            return answer_error(
                op, exc.code, exc.status, bucket=self._bucket, endpoint=self._endpoint, where=where
            )
        if isinstance(exc, ssl.SSLCertVerificationError):
            why = "its TLS certificate is not trusted (a private CA goes in AWS_CA_BUNDLE)"
            return StorageUnavailableError(f"cannot reach {self._endpoint}: {why}")
        if isinstance(exc, (ConnectionRefusedError, TimeoutError, ssl.SSLError)) or (
            isinstance(exc, OSError) and not isinstance(exc, ConnectionError)
        ):
            return StorageUnavailableError(f"cannot reach {self._endpoint}")
        return StorageError(f"S3 {op} failed for {where}: {type(exc).__name__}")

    async def _run(self, op: str, key: str | None, method: str, path: str, params: dict[str, str]) -> bytes:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(THREADS, thread_name_prefix="s3-http")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._request, op, key, method, path, params)

    # --- the Storage interface ---------------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        """Whole object; ObjectNotFoundError when missing."""
        path = f"{self._path}/{quote(self._base + validate_key(key), safe='/~')}"
        return await self._run("GetObject", key, "GET", path, {})

    async def _pages(self, prefix: str, delimiter: bool) -> list[ElementTree.Element]:
        params = {"list-type": "2", "prefix": self._base + prefix, "encoding-type": "url"}
        params["max-keys"] = str(LIST_PAGE_KEYS)
        if delimiter:
            params["delimiter"] = "/"
        pages = []
        while True:
            body = await self._run("ListObjectsV2", prefix, "GET", self._path, params)
            try:
                page = _xml(body)
            except ElementTree.ParseError:
                raise StorageError(
                    f"S3 ListObjectsV2 failed for s3://{self._bucket}: unreadable answer"
                ) from None
            pages.append(page)
            token = page.findtext(f"{_NS}NextContinuationToken")
            if page.findtext(f"{_NS}IsTruncated") != "true" or not token:
                return pages
            params["continuation-token"] = token

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key."""
        full = self._base + validate_prefix(prefix)
        found = []
        for page in await self._pages(prefix, delimiter=False):
            for item in page.iter(f"{_NS}Contents"):
                name = unquote_plus(item.findtext(f"{_NS}Key") or "")
                # Folder markers made by consoles are not objects of the archive.
                if name.startswith(full) and not name.endswith("/"):
                    found.append(ObjectInfo(name[len(self._base) :], int(item.findtext(f"{_NS}Size") or 0)))
        found.sort(key=lambda info: info.key)
        return found

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Immediate sub-prefixes of ``prefix`` (each ending in ``/``), sorted; one delimiter listing."""
        full = self._base + validate_prefix(prefix)
        names = (
            unquote_plus(common.findtext(f"{_NS}Prefix") or "")
            for page in await self._pages(prefix, delimiter=True)
            for common in page.iter(f"{_NS}CommonPrefixes")
        )
        return sorted(name[len(self._base) :] for name in names if name.startswith(full))

    async def check(self) -> None:
        """Raise StorageUnavailableError when the endpoint, bucket or credentials do not work."""
        try:
            await self._run("HeadBucket", None, "HEAD", self._path, {})
        except StorageUnavailableError:
            raise
        except StorageError as exc:
            raise StorageUnavailableError(str(exc)) from exc

    def _write_backend(self) -> Storage:
        if self._writer is None:
            from archiver.storage.s3 import S3Storage

            self._writer = S3Storage(self._settings)
        return self._writer

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` only if nothing is there (through S3Storage)."""
        await self._write_backend().put(key, data)

    async def put_file(self, key: str, path: str) -> None:
        """Store the local file ``path`` at ``key`` only if nothing is there (through S3Storage)."""
        await self._write_backend().put_file(key, path)

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the keys (through S3Storage); missing keys are not an error."""
        await self._write_backend().delete(keys)

    async def close(self) -> None:
        """Close connections and the worker threads."""
        self._closed.set()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False)
        for conn in self._connections:
            conn.close()
        self._connections.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            await writer.close()
