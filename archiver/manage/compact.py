"""``archiver compact``: merge the many small files of each closed app-hour into one sorted file.

Design. The unit is one *app-hour*: every file of one app (as keys give it
back) in one UTC hour, all regions: the v2 files under ``app=X/date=D/YYYYMMDDTHH``
and any v1 files under ``app=X1/date=D/hour=HH/region=*/`` (X1, the app's v1
segment, differs from X for some names). It is *closed* once its hour ended
by ``--before`` (default 2 hours ago) and by now: an hour still running is
never touched. A late file is merged by the next run. Each closed app-hour
whose listing, resolved by :func:`archiver.archive.supersede.resolve` (what a
query would read), is anything but one complete v2 compaction is compacted:

1. merge the live files in the order of concatenating them by relative name
   and sorting by exact time, stably; v1 inputs become schema v2 on the way
   (their region from the key), keeping the app value readers saw for them;
2. split into ``ceil(rows / rows_per_file)`` equal parts, ``rows_per_file``
   estimated from the inputs' compressed bytes per row so each part stays
   under ``COMPACT_TARGET_BYTES``;
3. write each part create-only, at :data:`archiver.codec.encode.COMPACT_COMPRESSION_LEVEL`,
   as ``app=X/date=D/<YYYYMMDDTHH>-c-<digest>-<part>of<count>.parquet``
   (``digest`` hashes the sorted input names), with the key-value metadata
   ``archiver.replaces`` listing every file superseded (transitively; names
   relative to ``app=X/date=D/``, v1 inputs as ``hour=HH/region=R/<name>``);
4. only then delete the inputs, and any compacted file whose own replaced set
   lies within the new one (leftovers of an earlier crash or a slower compactor).

Why this never loses or duplicates a row:

* Crash anywhere, then rerun: the same listing gives the same inputs, hence the
  same names; a part already written is skipped (``ObjectExistsError``); a
  group with a part missing is ignored by readers and rewritten; inputs left
  after a crash during deletion are recognised from ``archiver.replaces`` and
  deleted. Rerunning on a compacted archive changes nothing (idempotent).
* A query listing in the middle applies the same rule, so it reads either the
  inputs or the complete group, never both; a file deleted between its listing
  and its read makes it re-list that hour before printing any of it.
* Two compactors at once: with the same view they write the same names (the
  second write is refused and ignored); with different views (a late file
  arrived in between) the group that replaces more wins in every reader, and
  the next run deletes the other.

Memory: one app-hour at a time, merged by :class:`archiver.codec.merge.Merger`
(timestamps first, then a row group at a time): peak 242 MiB for 300,000 rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive.escaping import decoded_values, value_segment
from archiver.archive.layout import hour_prefix, hour_start_ns, parse_key
from archiver.archive.navigator import app_selection, files_of_days, select_apps
from archiver.archive.supersede import (
    compact_name,
    groups_of,
    input_digest,
    replaced_names,
    replaces_metadata,
    resolve,
    superseded_by,
)
from archiver.codec.merge import Merger, input_problem
from archiver.errors import ObjectExistsError, ObjectNotFoundError
from archiver.storage.interface import ObjectInfo, Storage

#: Concurrent GETs of one partition's inputs, and concurrent date listings.
FETCH_CONCURRENCY = 16

_log = logging.getLogger("archiver.compact")  # the name it had before the move: users filter on it
Say = Callable[[str], None]


@dataclass(slots=True)
class CompactStats:
    """What a compaction run did."""

    partitions: int = 0
    compacted: int = 0
    files_in: int = 0
    bytes_in: int = 0
    files_out: int = 0
    bytes_out: int = 0
    rows: int = 0
    deleted: int = 0
    skipped: int = 0


async def list_partitions(
    storage: Storage, app_segment: str, before_ns: int, since_ns: int = 0
) -> dict[str, list[ObjectInfo]]:
    """Files of each app-hour ended in ``(since_ns, before_ns]`` of the app(s) one listed segment holds.

    Keyed by the app-hour's v2 hour prefix (where its compacted files go); the
    files of that app under its other-layout segment are included.
    """
    selection = select_apps(decoded_values(app_segment))
    out: dict[str, list[ObjectInfo]] = {}
    # An hour ended by before_ns is one that started before the start of before_ns's hour.
    for segment in selection.segments:
        found = await files_of_days(
            storage, segment, since_ns, hour_start_ns(before_ns), FETCH_CONCURRENCY, selection
        )
        for file in found:
            prefix = hour_prefix(value_segment(file.app), file.hour_ns)
            out.setdefault(prefix, []).append(ObjectInfo(file.key, file.size))
    return dict(sorted(out.items()))


async def compact_archive(
    storage: Storage,
    apps: Sequence[str],
    before_ns: int,
    target_bytes: int,
    say: Say | None = None,
    now_ns: int | None = None,
) -> CompactStats:
    """Compact every closed app-hour of ``apps`` (every app when empty); see the module docstring.

    Closed: ended by ``min(before_ns, now_ns)`` (``now_ns`` defaults to the clock).
    """
    stats = CompactStats()
    before_ns = min(before_ns, time.time_ns() if now_ns is None else now_ns)
    done: set[str] = set()
    for segment in (await app_selection(storage, apps)).segments:
        for prefix, infos in (await list_partitions(storage, segment, before_ns)).items():
            if prefix in done:
                continue  # an app under two segments (v1 and v2 spellings): listed from both
            done.add(prefix)
            stats.partitions += 1
            await compact_partition(storage, prefix, infos, target_bytes, stats, say)
    return stats


async def _fetch(storage: Storage, keys: Sequence[str]) -> dict[str, bytes] | None:
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)

    async def get(key: str) -> bytes:
        async with limit:
            return await storage.get(key)

    try:
        return dict(zip(keys, await asyncio.gather(*(get(k) for k in keys)), strict=True))
    except ObjectNotFoundError:
        return None  # another compactor moved on under us: the next run sees its result


def _metadata(data: bytes) -> dict[bytes, bytes]:
    return dict(pq.read_metadata(pa.BufferReader(data)).metadata or {})


def part_count(rows: int, input_bytes: int, target_bytes: int) -> int:
    """How many files keep each under ``target_bytes``, judging by the inputs' compressed bytes per row."""
    if rows == 0:
        return 1
    rows_per_file = max(1, target_bytes * rows // max(1, input_bytes))
    return -(-rows // rows_per_file)


async def compact_partition(
    storage: Storage,
    prefix: str,
    infos: Sequence[ObjectInfo],
    target_bytes: int,
    stats: CompactStats,
    say: Say | None = None,
) -> None:
    """Compact one app-hour (``prefix``: its v2 hour prefix) listed as ``infos``; a no-op when already compact."""
    unit = _Unit(prefix, infos)
    names = sorted(unit.keys)
    if _one_v2_group(names):
        return  # nothing to do, nothing to read
    groups = groups_of(names)
    # One part of every group (complete or not): its replaced set decides what is live and what is garbage.
    probes = [parts[0] for parts in groups.values()]
    fetched = await _fetch(storage, [unit.keys[n] for n in probes])
    if fetched is None:
        stats.skipped += 1
        return
    replaces = {}
    for name in probes:
        try:
            replaces[name] = replaced_names(name, _metadata(fetched[unit.keys[name]]))
        except (pa.ArrowException, OSError) as exc:
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            _warn(say, f"warning: skipped {unit.keys[name]}: {reason} (its app-hour is left as it is)")
            stats.skipped += 1
            return
    resolution = resolve(names, replaces)
    live = resolution.live
    if _one_v2_group(live):
        # Already compact: only delete what the group supersedes (left by a crash).
        own = set(live)
        replaced = replaces.get(next(n for n in probes if n in own)) or frozenset()
        garbage = superseded_by(names, replaces, replaced | own, own)
        if garbage:
            await storage.delete([unit.keys[n] for n in garbage])
            stats.deleted += len(garbage)
        return
    covered = set(live) | set(resolution.twins)
    await _merge(storage, unit, names, live, covered, replaces, fetched, target_bytes, stats, say)


def _one_v2_group(names: Sequence[str]) -> bool:
    """Whether ``names`` are exactly the parts of one complete v2 compaction."""
    groups = groups_of(names)
    return len(groups) == 1 and (group := next(iter(groups))).directory == "" and len(names) == group.count


class _Unit:
    """One app-hour's files by relative name (keys, sizes, v1 regions), and where its outputs go."""

    def __init__(self, prefix: str, infos: Sequence[ObjectInfo]) -> None:
        self.prefix, self.directory = prefix, prefix.rpartition("/")[0]
        parsed = {info: key for info in infos if (key := parse_key(info.key)) is not None}
        self.keys = {p.relative_name: info.key for info, p in parsed.items()}
        self.sizes = {p.relative_name: info.size for info, p in parsed.items()}
        self.regions = {p.relative_name: p.region for p in parsed.values()}
        self.hour_ns = next((p.hour_ns for p in parsed.values()), 0)


async def _merge(
    storage: Storage,
    unit: _Unit,
    names: list[str],
    live: list[str],
    covered: set[str],
    replaces: dict[str, frozenset[str] | None],
    fetched: dict[str, bytes],
    target_bytes: int,
    stats: CompactStats,
    say: Say | None,
) -> None:
    more = await _fetch(storage, [unit.keys[n] for n in live if unit.keys[n] not in fetched])
    if more is None:
        stats.skipped += 1
        return
    fetched |= more
    # Never merge (and so delete) a file that is not an archive file: the app-hour waits, named.
    problems = {n: p for n in live if (p := input_problem(fetched[unit.keys[n]])) is not None}
    for name, problem in problems.items():
        _warn(say, f"warning: skipped {unit.keys[name]}: {problem} (its app-hour is left as it is)")
    if problems:
        stats.skipped += 1
        return
    # Transitive: a compacted input's own replaced set (every part carries it; the probe read one).
    for group_parts in groups_of(live).values():
        covered |= next((r for p in group_parts if (r := replaces.get(p)) is not None), frozenset())
    input_bytes = sum(unit.sizes[n] for n in live)
    outputs: list[str] = []
    size_out = 0
    try:
        sources = [fetched.pop(unit.keys[n]) for n in live]
        regions = [unit.regions[n] for n in live]
        merger = await asyncio.to_thread(Merger, sources, replaces_metadata(covered), regions)
        count = part_count(merger.rows, input_bytes, target_bytes)
        outputs = [compact_name(unit.hour_ns, input_digest(live), i, count) for i in range(count)]
        for index, name in enumerate(outputs):
            # Parts are produced in order (the merge streams), one in memory at a time.
            data = await asyncio.to_thread(merger.part, index, count)
            size_out += len(data)
            # Taken: an earlier (crashed) run or a concurrent compactor wrote these very rows.
            with contextlib.suppress(ObjectExistsError):
                await storage.put(f"{unit.directory}/{name}", data)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        _warn(say, f"warning: skipped {unit.prefix}: cannot merge its files: {str(exc).splitlines()[0]}")
        stats.skipped += 1
        return
    # Every part is written: only now may what they supersede go.
    garbage = superseded_by(names, replaces, frozenset(covered), set(outputs))
    await storage.delete([unit.keys[n] for n in garbage])
    stats.compacted += 1
    stats.files_in += len(live)
    stats.bytes_in += input_bytes
    stats.files_out += len(outputs)
    stats.bytes_out += size_out
    stats.rows += merger.rows
    stats.deleted += len(garbage)
    if say is not None:
        say(
            f"{_display(unit.prefix)}  {len(live)} files {input_bytes} B -> {len(outputs)} file(s) {size_out} B, "
            f"{merger.rows} rows"
        )


def _display(prefix: str) -> str:
    parsed = parse_key(prefix + "-x.parquet")
    return prefix if parsed is None else f"{parsed.app} {parsed.hour:%Y-%m-%dT%H}Z"


def _warn(say: Say | None, line: str) -> None:
    _log.warning(line)
    if say is not None:
        say(line)
