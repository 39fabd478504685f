"""A read-only reader of the table's log over the Storage interface: the live files and the version.

Works wherever :class:`~archiver.storage.interface.Storage` does (local directory, S3 through
aiobotocore, the signed-HTTP reader of ``archiver query``) and never imports delta-rs: opening
the table with delta-rs costs 10-20x more (FINDINGS §7). Steps:

1. ``_delta_log/_last_checkpoint`` (a hint: the newest checkpoint found by listing wins);
2. the listing of the log from that checkpoint on, in blocks of :data:`BLOCK` versions (one
   prefix listing each: ``_delta_log/<first 18 digits>``), so no read lists the whole log, which
   holds days of commits until log clean-up; without ``_last_checkpoint`` the whole log is listed;
3. the checkpoint (its parts) and every commit after it, which must follow each other with no
   gap (a gap or a missing checkpoint is a TableError, not a silent partial answer).

A log object that vanishes between the listing and its read (log clean-up, a checkpoint being
replaced) restarts the read, at most :data:`ATTEMPTS` times. Returns None when there is no
table (no log objects at all): the archive is bare files, as written by earlier versions.

"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Collection
from dataclasses import dataclass

from archiver.errors import ObjectNotFoundError, TableError
from archiver.storage.interface import Storage
from archiver.table.files import LiveFile
from archiver.table.log_cache import SAVE_AFTER, CachedSnapshot, SnapshotCache, digest
from archiver.table.log_files import (
    CHECKPOINT,
    CHECKPOINT_PART,
    COMMIT,
    Filter,
    LogName,
    apply_commit,
    commit_key,
    parse_last_checkpoint,
    parse_log_name,
    read_checkpoint,
)
from archiver.table.schema import LOG_PREFIX

#: Versions per listing block: a block's names (100 commits, a checkpoint, .crc files) fit one LIST page.
BLOCK = 100
#: Reads restarted when a listed log object vanished before it was read.
ATTEMPTS = 3
#: Commits fetched at once (each a GET; on S3 the latency, not the bytes, is the cost).
CONCURRENT_GETS = 16
LAST_CHECKPOINT = LOG_PREFIX + "_last_checkpoint"


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The table at one version: its live files (sorted by key), restricted as asked."""

    version: int
    files: list[LiveFile]


async def read_snapshot(
    storage: Storage,
    apps: Collection[str] | None = None,
    dates: Collection[str] | None = None,
    cache: SnapshotCache | None = None,
) -> Snapshot | None:
    """The live files (of ``apps`` and ``dates`` when given, as ``YYYY-MM-DD``) and version; None: no table.

    With a ``cache`` (:mod:`archiver.table.log_cache`), only the commits after the cached version are read.
    """
    wanted = Filter(apps, dates)
    for attempt in range(ATTEMPTS):
        try:
            return await _read(storage, wanted, cache)
        except ObjectNotFoundError as exc:
            if attempt == ATTEMPTS - 1:
                raise TableError(f"the Delta log kept changing while read: {exc}") from None
    raise AssertionError("unreachable")


async def _listed_names(storage: Storage, start: int) -> dict[str, LogName]:
    """Recognised log names (by key) of versions from ``start``'s block on, one block listing at a time."""
    names: dict[str, LogName] = {}
    block = start // BLOCK
    while True:
        listed = await storage.list(f"{LOG_PREFIX}{block:018d}")
        last = None
        for info in listed:
            name = parse_log_name(info.key[len(LOG_PREFIX) :])
            if name is not None:
                names[info.key] = name
                if name.kind == COMMIT:
                    last = name.version
        if last != block * BLOCK + BLOCK - 1:
            return names
        block += 1


async def _all_names(storage: Storage) -> dict[str, LogName]:
    """Every recognised log name (no ``_last_checkpoint``: a new table or one written by another tool)."""
    names = {}
    for info in await storage.list(LOG_PREFIX):
        name = parse_log_name(info.key[len(LOG_PREFIX) :])
        if name is not None:
            names[info.key] = name
    return names


def _newest_checkpoint(names: dict[str, LogName], at_least: int) -> tuple[int, list[str]] | None:
    """(version, keys of its parts) of the newest complete checkpoint at or after ``at_least``."""
    by_version: dict[tuple[int, int], dict[int, str]] = {}
    for key, name in names.items():
        if name.kind in (CHECKPOINT, CHECKPOINT_PART) and name.version >= at_least:
            by_version.setdefault((name.version, name.parts), {})[name.part] = key
    complete = [(v, n) for (v, n), parts in by_version.items() if len(parts) == n]
    if not complete:
        return None
    version, count = max(complete)
    return version, [by_version[(version, count)][i] for i in range(1, count + 1)]


async def _read(storage: Storage, wanted: Filter, cache: SnapshotCache | None) -> Snapshot | None:
    hint = None
    with contextlib.suppress(ObjectNotFoundError):
        hint = parse_last_checkpoint(LAST_CHECKPOINT, await storage.get(LAST_CHECKPOINT))
    names = await (_all_names(storage) if hint is None else _listed_names(storage, hint[0]))
    checkpoint = _newest_checkpoint(names, 0 if hint is None else hint[0])
    if hint is not None and checkpoint is None:
        raise TableError(f"{LAST_CHECKPOINT} names checkpoint version {hint[0]}, which is not in the log")
    start = 0 if checkpoint is None else checkpoint[0] + 1
    commits = sorted((n.version, key) for key, n in names.items() if n.kind == COMMIT and n.version >= start)
    if checkpoint is None and not commits:
        return None
    for expected, (version, key) in enumerate(commits, start):
        if version != expected:
            raise TableError(f"the Delta log has a gap: version {expected} is missing before {key}")
    version = commits[-1][0] if commits else start - 1
    if cache is not None:
        every = await _read_cached(storage, cache, checkpoint, commits, wanted.dates)
        if every is not None:
            files = [f for f in every.values() if wanted.wants(f.app, f.date)]
            return Snapshot(version, sorted(files, key=lambda f: f.key))
    live: dict[str, LiveFile] = {}
    if checkpoint is not None:
        for key in checkpoint[1]:
            data = await storage.get(key)
            live.update(await asyncio.to_thread(read_checkpoint, key, data, wanted))
    await _replay(storage, [key for _, key in commits], live, wanted)
    return Snapshot(version, sorted(live.values(), key=lambda f: f.key))


async def _replay(
    storage: Storage, keys: list[str], live: dict[str, LiveFile], wanted: Filter
) -> bytes | None:
    """Apply the commits ``keys`` in order onto ``live``; the last one's bytes (None: no commits)."""
    last = None
    for first in range(0, len(keys), CONCURRENT_GETS):
        batch = keys[first : first + CONCURRENT_GETS]
        blobs = await asyncio.gather(*(storage.get(key) for key in batch))
        await asyncio.to_thread(_apply_all, batch, blobs, live, wanted)
        last = blobs[-1]
    return last


async def _read_cached(
    storage: Storage,
    cache: SnapshotCache,
    checkpoint: tuple[int, list[str]] | None,
    commits: list[tuple[int, str]],
    dates: frozenset[str] | None,
) -> dict[str, LiveFile] | None:
    """The live files (at least of ``dates``), from the cache and the commits after it (None: not cached)."""
    if checkpoint is None:
        return None  # a new table: a few commits, nothing worth caching
    everything = Filter(None, None)
    newest = commits[-1][0] if commits else checkpoint[0]
    cached = await asyncio.to_thread(cache.load, storage.url, dates)
    if cached is not None and checkpoint[0] <= cached.version <= newest:
        later = [key for version, key in commits if version > cached.version]
        own = await _get_if_there(storage, commit_key(cached.version))
        if own is not None and digest(own) == cached.commit_sha256:
            if len(later) < SAVE_AFTER:
                await _replay(storage, later, cached.files, Filter(None, dates))
                return cached.files  # the days asked for (every day when ``dates`` is None)
            every = await asyncio.to_thread(cache.load, storage.url)
            if every is not None and every.version == cached.version:
                last = await _replay(storage, later, every.files, everything)
                assert last is not None
                saved = CachedSnapshot(newest, digest(last), every.files)
                await asyncio.to_thread(cache.save, storage.url, saved)
                return every.files
    live: dict[str, LiveFile] = {}
    for key in checkpoint[1]:
        data = await storage.get(key)
        live.update(await asyncio.to_thread(read_checkpoint, key, data, everything))
    last = await _replay(storage, [key for _, key in commits], live, everything)
    if last is None:
        last = await _get_if_there(storage, commit_key(checkpoint[0]))
    if last is not None:
        await asyncio.to_thread(cache.save, storage.url, CachedSnapshot(newest, digest(last), live))
    return live


def _apply_all(keys: list[str], blobs: list[bytes], live: dict[str, LiveFile], wanted: Filter) -> None:
    for key, data in zip(keys, blobs, strict=True):
        apply_commit(key, data, live, wanted)


async def _get_if_there(storage: Storage, key: str) -> bytes | None:
    try:
        return await storage.get(key)
    except ObjectNotFoundError:
        return None
