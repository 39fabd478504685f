"""One small storage interface, two backends: S3-compatible buckets and local directories.

Queries read S3 through a third, read-mostly backend (:func:`open_read_storage`,
:mod:`archiver.storage.s3_http`: plain signed HTTP, no aiobotocore start-up).

Keys are relative to the archive prefix and use ``/`` as separator. Every
backend converts its own errors into :mod:`archiver.errors` at this boundary.
The contract (``tests/test_storage_contract.py``) runs over every backend.
"""

from __future__ import annotations

import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from archiver.config import ArchiveSettings


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """One stored object: key relative to the archive prefix, and size in bytes."""

    key: str
    size: int


class Storage(ABC):
    """Create-only object storage under one archive prefix."""

    #: Display form of the archive location, safe to log.
    url: str

    @abstractmethod
    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` only if nothing is there; ObjectExistsError otherwise."""

    @abstractmethod
    async def get(self, key: str) -> bytes:
        """Whole object; ObjectNotFoundError when missing."""

    @abstractmethod
    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key."""

    @abstractmethod
    async def list_dirs(self, prefix: str) -> builtins.list[str]:  # `list` is a method here
        """Immediate sub-prefixes of ``prefix`` (each ending in ``/``), sorted; one delimiter listing."""

    @abstractmethod
    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the keys; missing keys are not an error."""

    @abstractmethod
    async def check(self) -> None:
        """Raise StorageUnavailableError when the archive cannot be reached or is missing."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections."""


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
