"""Choosing the backend for an archive's settings: one place for every command."""

from __future__ import annotations

from archiver.config import ArchiveSettings
from archiver.storage.interface import Storage


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
