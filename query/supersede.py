"""Reading around compaction: which listed files of an hour a query reads (see :mod:`archiver.archive.supersede`).

The files of an hour are resolved per app (the app-hour, both layouts, by
relative name). When an app-hour's listing mixes compacted files with others,
or holds several compaction groups, the ``archiver.replaces`` list in one
footer per complete group decides which files are live; everything else is
left out, so a query running during or after an interrupted compaction reads
each row exactly once. In the usual cases (no compacted or imported file, or
one complete group alone) nothing extra is read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive.navigator import ArchiveFile
from archiver.archive.supersede import identity, metadata_needed, parse_compact_name, replaced_names, resolve
from archiver.config import ArchiveSettings
from archiver.errors import ObjectNotFoundError, VanishedError
from archiver.storage.interface import Storage
from archiver.storage.open import open_filesystem

#: Key-value metadata of a file's footer ({} when none), None when unreadable; VanishedError when gone.
Footers = Callable[[ArchiveFile], Awaitable[Mapping[bytes, bytes] | None]]


class FooterReader:
    """Key-value metadata of archive files: footer-only reads through pyarrow when settings are given.

    Without settings (or before the filesystem exists) a whole-object GET through
    :class:`~archiver.storage.interface.Storage`; compacted footers are read only in the rare
    mixed partitions, so the ranged filesystem is created on first use.
    """

    def __init__(self, storage: Storage, settings: ArchiveSettings | None = None) -> None:
        self.storage = storage
        self.settings = settings
        self._filesystem: tuple[Any, str] | None = None

    def _fs(self) -> tuple[Any, str]:
        if self._filesystem is None:
            assert self.settings is not None
            self._filesystem = open_filesystem(self.settings)
        return self._filesystem

    def _ranged(self, planned: ArchiveFile) -> Mapping[bytes, bytes] | None:
        import pyarrow.dataset as ds

        fs, base = self._fs()
        # A fragment with a known size reads just the footer: one ranged GET on S3, no HEAD.
        fragment = ds.ParquetFileFormat().make_fragment(
            f"{base}/{planned.key}", filesystem=fs, file_size=planned.size
        )
        metadata: Mapping[bytes, bytes] | None = fragment.metadata.metadata
        return metadata or {}

    async def __call__(self, planned: ArchiveFile) -> Mapping[bytes, bytes] | None:
        """The file's key-value metadata ({} when none); None when unreadable; VanishedError when gone."""
        try:
            if self.settings is not None:
                return await asyncio.to_thread(self._ranged, planned)
            data = await self.storage.get(planned.key)
            metadata: Mapping[bytes, bytes] | None = pq.read_metadata(pa.BufferReader(data)).metadata
            return metadata or {}
        except (FileNotFoundError, ObjectNotFoundError):
            raise VanishedError(planned.key) from None
        except (pa.ArrowException, OSError, ValueError):
            return None  # not readable: its group counts as incomplete, its inputs are read if there


async def live_files(files: Sequence[ArchiveFile], footers: Footers) -> list[ArchiveFile]:
    """The files of one hour to read, each partition resolved; VanishedError when a footer is gone."""
    partitions: dict[str, list[ArchiveFile]] = {}
    for planned in files:
        partitions.setdefault(planned.app, []).append(planned)

    def without_footers(group: list[ArchiveFile]) -> list[ArchiveFile] | None:
        """The group resolved from its names alone; None when footers are needed."""
        if len(group) == 1:
            parsed = parse_compact_name(group[0].relative_name)
            if parsed is None or parsed.count == 1:
                return group  # one file (an hour's or a day's only one) is what there is to read
        by_name = {f.relative_name: f for f in group}
        if not any(parse_compact_name(n) or identity(n) != n for n in by_name):
            return group  # the common case: nothing compacted or imported here
        if metadata_needed(list(by_name)):
            return None
        return [by_name[n] for n in resolve(list(by_name), {}).live]

    async def with_footers(group: list[ArchiveFile]) -> list[ArchiveFile]:
        by_name = {f.relative_name: f for f in group}
        needed = metadata_needed(list(by_name))
        metas = await asyncio.gather(*(footers(by_name[n]) for n in needed))
        replaces = {n: replaced_names(n, m) for n, m in zip(needed, metas, strict=True)}
        keep = set(resolve(list(by_name), replaces).live)
        # A compacted file whose footer cannot be read may hold the only copy of its rows (its inputs
        # deleted): read it anyway, so the reader names it in a warning (an error with --strict).
        keep.update(n for n, m in zip(needed, metas, strict=True) if m is None)
        return [f for f in group if f.relative_name in keep]

    # Resolved in place where the names suffice (no coroutine per partition: a 30-day count has 14,000).
    resolved, waiting = [], []
    for group in partitions.values():
        found = without_footers(group)
        if found is None:
            waiting.append(group)
        else:
            resolved.append(found)
    if waiting:
        resolved += await asyncio.gather(*map(with_footers, waiting))
    kept = {id(f) for group in resolved for f in group}
    return [f for f in files if id(f) in kept]
