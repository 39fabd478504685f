"""Choosing the backend and the pyarrow filesystem for an archive's settings (archiver.storage.open)."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pyarrow.fs
import pytest

from archiver.config import ArchiveSettings, S3Settings
from archiver.errors import StorageUnavailableError
from archiver.storage import local, s3, s3_http
from archiver.storage.open import (
    check_for_reading,
    open_filesystem,
    open_read_storage,
    open_storage,
    require_existing,
)

KEYS = S3Settings("http://127.0.0.1:9", "us-east-1", "id", "secret")


def test_open_storage_by_scheme(tmp_path: Path) -> None:
    assert isinstance(open_storage(ArchiveSettings("s3", "b", "p", KEYS)), s3.S3Storage)
    store = open_storage(ArchiveSettings("file", "", str(tmp_path)))
    assert isinstance(store, local.LocalStorage) and store.root == str(tmp_path)


def test_chosen_only_with_endpoint_and_keys(tmp_path: Path) -> None:
    keys = S3Settings("http://127.0.0.1:9", "us-east-1", "id", "secret")
    assert isinstance(open_read_storage(ArchiveSettings("s3", "b", "p", keys)), s3_http.S3HttpStorage)
    # No endpoint (AWS itself) or no explicit keys (credential chain): the aiobotocore backend.
    for other in (
        dataclasses.replace(keys, endpoint_url=None),
        dataclasses.replace(keys, access_key_id=None),
    ):
        assert isinstance(open_read_storage(ArchiveSettings("s3", "b", "p", other)), s3.S3Storage)
    assert isinstance(open_read_storage(ArchiveSettings("file", "", str(tmp_path))), local.LocalStorage)


def test_filesystem_local_is_the_directory(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    fs, base = open_filesystem(ArchiveSettings("file", "", str(tmp_path)))
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and base == str(tmp_path)
    with fs.open_input_file(f"{base}/f") as f:
        assert f.read() == b"x"


@pytest.mark.parametrize(("prefix", "base"), [("p/q", "b/p/q"), ("", "b")])
def test_filesystem_s3_is_the_bucket_and_prefix(prefix: str, base: str) -> None:
    fs, found = open_filesystem(ArchiveSettings("s3", "b", prefix, KEYS))
    assert isinstance(fs, pyarrow.fs.S3FileSystem) and found == base


def test_reading_never_creates_a_local_archive(tmp_path: Path) -> None:
    missing = ArchiveSettings("file", "", str(tmp_path / "typo"))
    with pytest.raises(StorageUnavailableError, match=r"archive directory .*typo does not exist"):
        require_existing(missing)
    with pytest.raises(StorageUnavailableError, match="does not exist"):
        asyncio.run(check_for_reading(missing, open_read_storage(missing)))
    assert not (tmp_path / "typo").exists()
    there = ArchiveSettings("file", "", str(tmp_path))
    require_existing(there)
    asyncio.run(check_for_reading(there, open_read_storage(there)))
    assert list(tmp_path.iterdir()) == []  # not even a probe write
    require_existing(ArchiveSettings("s3", "b", "p", KEYS))  # nothing to check locally for a bucket
