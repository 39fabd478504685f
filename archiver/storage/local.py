"""Local-directory backend: the same create-only contract as S3, on a POSIX file system.

A put writes a hidden temporary file next to its destination, fsyncs it and
hard-links it into place: ``link`` fails when the name is taken, so a put is
create-only and a reader never sees a partial file, even after a crash.
:meth:`LocalStorage.put_file` makes the temporary file a hard link of the
given file (a copy when it is on another file system), so a big file is
never read into memory; :meth:`LocalStorage.get_file` links (or copies) the
other way.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from archiver.errors import ObjectExistsError, ObjectNotFoundError, StorageError, StorageUnavailableError
from archiver.storage.interface import ObjectInfo, Storage
from archiver.storage.keys import TMP_PREFIX, validate_key, validate_prefix

if TYPE_CHECKING:
    import pyarrow.fs

    from archiver.config import ArchiveSettings

_Source = TypeVar("_Source")

#: A concurrent delete may prune the directory a put just created; the put recreates it this often.
_MKDIR_ATTEMPTS = 5


def _link_into_place(tmp: str, path: str) -> None:
    """Give the written, fsynced ``tmp`` its name ``path`` only if nothing has it (create-only), then drop ``tmp``."""
    try:
        try:
            os.link(tmp, path)
        except FileExistsError:
            if os.path.isdir(path):
                raise IsADirectoryError(errno.EISDIR, "a directory has that name") from None
            raise ObjectExistsError(f"{path} already exists") from None
    finally:
        os.unlink(tmp)
    _fsync_dir(os.path.dirname(path))


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _link_or_copy(source: str, target: str) -> None:
    """A new name ``target`` for the file ``source``: a hard link, or a copy where links cannot go."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EOPNOTSUPP):
            raise
        shutil.copyfile(source, target)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


class LocalStorage(Storage):
    """Create-only object storage in a local directory."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *validate_key(key).split("/"))

    async def put(self, key: str, data: bytes) -> None:
        """Store ``data`` at ``key`` only if nothing is there; ObjectExistsError otherwise."""
        await self._create(key, self._put_sync, data)

    async def _create(self, key: str, write: Callable[[str, _Source], None], source: _Source) -> None:
        """Run ``write(path, source)`` in a thread; its OSErrors become StorageError (ObjectExistsError passes)."""
        path = self._path(key)
        try:
            await asyncio.to_thread(write, path, source)
        except ObjectExistsError:
            raise
        except OSError as exc:
            raise StorageError(f"cannot write {key!r} in {self.root}: {_reason(exc)}") from exc

    def _put_sync(self, path: str, data: bytes) -> None:
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        fd = self._create_tmp(directory, tmp)
        try:
            with open(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            os.unlink(tmp)
            raise
        _link_into_place(tmp, path)

    async def put_file(self, key: str, path: str) -> None:
        """Store the local file ``path`` at ``key`` only if nothing is there (linked, not read)."""
        await self._create(key, self._put_file_sync, path)

    def _put_file_sync(self, destination: str, source: str) -> None:
        directory = os.path.dirname(destination)
        tmp = os.path.join(directory, f"{TMP_PREFIX}{uuid.uuid4().hex}")
        for attempt in range(_MKDIR_ATTEMPTS):
            self._make_dirs(directory)
            try:
                _link_or_copy(source, tmp)
                break
            except FileNotFoundError:
                if attempt == _MKDIR_ATTEMPTS - 1 or not os.path.exists(source):
                    raise  # a concurrent delete pruned the directory we had just made: made again above
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            os.unlink(tmp)
            raise
        _link_into_place(tmp, destination)

    def _create_tmp(self, directory: str, tmp: str) -> int:
        for _ in range(_MKDIR_ATTEMPTS - 1):
            try:
                self._make_dirs(directory)
                return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileNotFoundError:
                continue  # a concurrent delete pruned a directory we had just made
        self._make_dirs(directory)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def _make_dirs(self, directory: str) -> None:
        missing = []
        while not os.path.isdir(directory):
            missing.append(directory)
            directory = os.path.dirname(directory)
        for path in reversed(missing):
            # A concurrent put may have made it; a file in the way fails at open() with a clear error.
            with contextlib.suppress(FileExistsError):
                os.mkdir(path)
            # The new directory entry must be durable, or a crash could lose the file under it.
            _fsync_dir(os.path.dirname(path))

    async def get(self, key: str) -> bytes:
        """Whole object; ObjectNotFoundError when missing."""
        path = self._path(key)
        try:
            return await asyncio.to_thread(self._read, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} in {self.root}: {_reason(exc)}") from exc

    async def get_file(self, key: str, path: str) -> None:
        """Write the object at ``key`` to the new local file ``path`` (linked, or copied across file systems)."""
        source = self._path(key)
        try:
            await asyncio.to_thread(_link_or_copy, source, path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFoundError(f"no object {key!r} in {self.root}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key!r} in {self.root}: {_reason(exc)}") from exc

    @staticmethod
    def _read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    async def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with ``prefix`` (recursive), sorted by key."""
        validate_prefix(prefix)
        try:
            return await asyncio.to_thread(self._list_sync, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list {prefix!r} in {self.root}: {_reason(exc)}") from exc

    def _list_sync(self, prefix: str) -> builtins.list[ObjectInfo]:
        directory, _, partial = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        found: list[ObjectInfo] = []
        pending = [(base, partial)]
        while pending:
            rel_dir, name_prefix = pending.pop()
            try:
                entries = builtins.list(os.scandir(os.path.join(self.root, rel_dir)))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                if not entry.name.startswith(name_prefix) or entry.name.startswith(TMP_PREFIX):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append((rel_dir + entry.name + "/", ""))
                elif entry.is_file():
                    try:
                        size = entry.stat().st_size
                    except FileNotFoundError:  # deleted while listing
                        continue
                    found.append(ObjectInfo(rel_dir + entry.name, size))
        found.sort(key=lambda info: info.key)
        return found

    async def list_dirs(self, prefix: str) -> builtins.list[str]:
        """Immediate sub-prefixes of ``prefix`` (each ending in ``/``), sorted."""
        validate_prefix(prefix)
        try:
            return await asyncio.to_thread(self._list_dirs_sync, prefix)
        except OSError as exc:
            raise StorageError(f"cannot list {prefix!r} in {self.root}: {_reason(exc)}") from exc

    def _list_dirs_sync(self, prefix: str) -> builtins.list[str]:
        directory, _, partial = prefix.rpartition("/")
        base = directory + "/" if directory else ""
        try:
            entries = builtins.list(os.scandir(os.path.join(self.root, directory)))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(
            base + entry.name + "/"
            for entry in entries
            if entry.name.startswith(partial)
            and not entry.name.startswith(TMP_PREFIX)
            and entry.is_dir(follow_symlinks=False)
        )

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the keys and then-empty parent directories; missing keys are not an error."""
        paths = [self._path(key) for key in keys]
        try:
            await asyncio.to_thread(self._delete_sync, paths)
        except OSError as exc:
            raise StorageError(f"cannot delete {exc.filename} in {self.root}: {_reason(exc)}") from exc

    def _delete_sync(self, paths: builtins.list[str]) -> None:
        parents = set()
        for path in paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except (IsADirectoryError, NotADirectoryError):  # not an object, so nothing to delete
                continue
            parents.add(os.path.dirname(path))
        # Deepest first, so a parent is tried after its children are gone. Pruning is best effort.
        for directory in sorted(parents, key=len, reverse=True):
            while directory != self.root and directory.startswith(self.root + os.sep):
                try:
                    os.rmdir(directory)
                except FileNotFoundError:
                    pass  # a concurrent delete pruned it; its parent may be empty too
                except OSError:
                    break  # not empty (or not ours to remove): so are all its ancestors
                directory = os.path.dirname(directory)

    async def check(self) -> None:
        """Raise StorageUnavailableError unless the root directory exists (or can be made) and is writable."""
        try:
            await asyncio.to_thread(self._check_sync)
        except OSError as exc:
            raise StorageUnavailableError(
                f"archive directory {self.root} is not usable: {_reason(exc)}"
            ) from exc

    def _check_sync(self) -> None:
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        os.makedirs(self.root, exist_ok=True)
        # os.access is wrong for root and for read-only mounts; a real write is the only proof.
        probe = os.path.join(self.root, f"{TMP_PREFIX}check-{uuid.uuid4().hex}")
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        os.unlink(probe)

    async def close(self) -> None:
        """Nothing to release for a local directory."""


def pyarrow_filesystem(settings: ArchiveSettings) -> tuple[pyarrow.fs.FileSystem, str]:
    """A pyarrow LocalFileSystem and the archive root directory, for dataset scans."""
    import pyarrow.fs

    return pyarrow.fs.LocalFileSystem(), os.path.abspath(settings.prefix)
