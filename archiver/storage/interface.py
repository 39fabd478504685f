"""The storage interface every backend implements: create-only puts, whole gets, prefix listings.

Keys are relative to the archive prefix and use ``/`` as separator (checked by
:mod:`archiver.storage.keys`). Every backend converts its own errors into
:mod:`archiver.errors` at this boundary. The contract
(``tests/test_storage_contract.py``) runs over every backend.
"""

from __future__ import annotations

import asyncio
import builtins
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


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

    async def put_file(self, key: str, path: str) -> None:
        """Store the local file ``path`` at ``key`` only if nothing is there; ObjectExistsError otherwise.

        The file is not changed, and must not be changed afterwards (a backend may link it).
        Backends override it to stream big files (S3: multipart; local: a hard link).
        """
        await self.put(key, await asyncio.to_thread(_read_file, path))

    async def get_file(self, key: str, path: str) -> None:
        """Write the object at ``key`` to the new local file ``path``; ObjectNotFoundError when missing.

        Backends override it so that a big object never sits in memory whole.
        """
        await asyncio.to_thread(_write_file, path, await self.get(key))

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


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_file(path: str, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
