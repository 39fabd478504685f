"""Choosing the backend for an archive's settings, in one place for every command.

:func:`open_storage` for the service and the management commands,
:func:`open_read_storage` for read-mostly commands (``query``, ``ls``,
``stats``), :func:`open_filesystem` for reads through pyarrow (footers, local
scans). Backends are imported only when chosen, so a local query never
imports the S3 client.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

from archiver.errors import StorageUnavailableError
from archiver.storage.interface import Storage

if TYPE_CHECKING:
    import pyarrow.fs

    from archiver.config import ArchiveSettings


def open_storage(settings: ArchiveSettings) -> Storage:
    """The backend for ``settings`` (not yet connected; call :meth:`Storage.check` to verify)."""
    if settings.scheme == "s3":
        from archiver.storage.s3 import S3Storage

        return S3Storage(settings)
    from archiver.storage.local import LocalStorage

    return LocalStorage(settings.prefix)


def open_read_storage(settings: ArchiveSettings) -> Storage:
    """The backend for a read-mostly command (``query``): on S3 with an explicit endpoint and keys, plain
    signed HTTP reads (:mod:`archiver.storage.s3_http`, no aiobotocore start-up); else :func:`open_storage`.
    """
    s3 = settings.s3
    if settings.scheme == "s3" and s3.endpoint_url and s3.access_key_id and s3.secret_access_key:
        from archiver.storage.s3_http import S3HttpStorage

        return S3HttpStorage(settings)
    return open_storage(settings)


def open_filesystem(settings: ArchiveSettings) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow filesystem reaching the archive, and the archive's base path in it (no trailing ``/``)."""
    if settings.scheme == "s3":
        from archiver.storage.s3 import pyarrow_filesystem as s3_filesystem

        return s3_filesystem(settings)
    from archiver.storage.local import pyarrow_filesystem

    return pyarrow_filesystem(settings)


def is_local(settings: ArchiveSettings) -> bool:
    """Whether the archive is a local directory (else an S3 bucket)."""
    return settings.scheme == "file"


def require_existing(settings: ArchiveSettings) -> None:
    """StorageUnavailableError when a local archive's directory is missing: reading must never create it."""
    if is_local(settings) and not os.path.isdir(settings.prefix):
        raise StorageUnavailableError(f"archive directory {settings.prefix} does not exist")


async def check_for_reading(settings: ArchiveSettings, storage: Storage) -> None:
    """StorageUnavailableError unless the archive is there to read, without writing anything to it.

    Local: the directory must exist (never created or probe-written: a typo must not make a
    directory). S3: HeadBucket, one attempt, so a wrong endpoint or key fails at once.
    """
    if is_local(settings):
        await asyncio.to_thread(require_existing, settings)
        return
    await storage.check()
