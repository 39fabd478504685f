"""The signed-HTTP S3 read backend beyond the contract: its errors, paging, the endpoint (chosen: test_storage_open)."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import pytest
from servers import SeaweedFS

from archiver.config import ArchiveSettings, S3Settings
from archiver.demo.servers import free_port
from archiver.errors import ObjectNotFoundError, StorageError, StorageUnavailableError
from archiver.storage import s3_http
from archiver.storage.interface import ObjectInfo

SECRETS = ("archiver-test-secret", "archiver-test", "X-Amz-Signature", "Credential=", "Signature=")


def no_secrets(message: str) -> None:
    assert "\n" not in message
    for secret in SECRETS:
        assert secret not in message


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the backoff short so error paths stay fast."""
    monkeypatch.setattr(s3_http, "RETRY_BASE_DELAY_S", 0.01)


async def test_pages_of_a_long_listing(s3_settings: ArchiveSettings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_http, "LIST_PAGE_KEYS", 2)
    store = s3_http.S3HttpStorage(s3_settings)
    try:
        keys = [f"app=a/region=r{i % 2}/k{i}.bin" for i in range(7)]
        for key in keys:
            await store.put(key, key.encode())
        assert await store.list("app=a/") == [ObjectInfo(k, len(k)) for k in sorted(keys)]
        assert await store.list_dirs("app=a/") == ["app=a/region=r0/", "app=a/region=r1/"]
        assert await store.get(keys[3]) == keys[3].encode()
    finally:
        await store.close()


async def test_missing_key_bucket_and_wrong_secret(
    seaweedfs: SeaweedFS, s3_settings: ArchiveSettings
) -> None:
    store = s3_http.S3HttpStorage(s3_settings)
    with pytest.raises(ObjectNotFoundError, match="no object s3://") as missing:
        await store.get("app=a/nothing.parquet")
    no_secrets(str(missing.value))
    await store.close()

    gone = s3_http.S3HttpStorage(seaweedfs.archive_settings("no-such-bucket-here", "p"))
    with pytest.raises(StorageUnavailableError, match="bucket no-such-bucket-here does not exist") as info:
        await gone.check()
    no_secrets(str(info.value))
    with pytest.raises(StorageError) as info:
        await gone.list("")
    no_secrets(str(info.value))
    await gone.close()

    wrong = dataclasses.replace(s3_settings.s3, secret_access_key="archiver-test-secret-but-wrong")
    denied = s3_http.S3HttpStorage(dataclasses.replace(s3_settings, s3=wrong))
    for call in (denied.check(), denied.get("k"), denied.list("")):
        with pytest.raises(StorageUnavailableError, match="access denied to bucket") as info:
            await call
        no_secrets(str(info.value))
    await denied.close()


async def test_unreachable_endpoint_with_userinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_http, "MAX_ATTEMPTS", 2)
    port = free_port()
    keys = S3Settings(
        f"http://user:archiver-test-secret@127.0.0.1:{port}/", "auto", "archiver-test", "x" * 40
    )
    store = s3_http.S3HttpStorage(ArchiveSettings("s3", "bucket", "p", keys))
    try:
        for call in (store.check(), store.get("k"), store.list("")):
            with pytest.raises(StorageUnavailableError) as info:
                await call
            assert str(info.value) == f"cannot reach http://127.0.0.1:{port}"
    finally:
        await store.close()


async def test_signature_matches_for_special_keys_and_prefixes(s3_settings: ArchiveSettings) -> None:
    # The canonical request must escape exactly as the server does, or S3 answers SignatureDoesNotMatch.
    store = s3_http.S3HttpStorage(s3_settings)
    try:
        key = "app=a b+c/x=~%2F(1)!*'.bin"
        await store.put(key, b"v")
        assert await store.get(key) == b"v"
        assert await store.list("app=a b+c/x=") == [ObjectInfo(key, 1)]
        assert await store.list_dirs("") == ["app=a b+c/"]
    finally:
        await store.close()


async def test_closing_stops_a_request_that_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """A request retrying against an endpoint that is down gives up once the storage closes.

    Otherwise the process, its error already printed, waited at exit for the retrying thread (a minute
    for ``archiver ls`` against a closed port).
    """
    monkeypatch.setattr(s3_http, "RETRY_BASE_DELAY_S", 5.0)
    monkeypatch.setattr(s3_http, "RETRY_MAX_DELAY_S", 5.0)
    monkeypatch.setattr(s3_http.random, "uniform", lambda low, high: high)
    closed_port = ArchiveSettings(
        "s3",
        "b",
        "p",
        S3Settings(f"http://127.0.0.1:{free_port()}", access_key_id="k", secret_access_key="s"),
    )
    store = s3_http.S3HttpStorage(closed_port)
    listing = asyncio.ensure_future(store.list("app=a/"))
    await asyncio.sleep(0.3)  # the first attempt failed: the thread waits before the next
    started = time.monotonic()
    await store.close()
    with pytest.raises(StorageUnavailableError, match="cannot reach"):
        await listing
    assert time.monotonic() - started < 2.0
