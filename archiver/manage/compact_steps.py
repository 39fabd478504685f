"""The steps of compacting one unit, each a function so that issue 14's table commit slots in between two of them.

:class:`~archiver.manage.compact.Compactor` runs them in order (the design
and why it is exact: :mod:`archiver.manage.compact`): :func:`read_replaced`,
:func:`fetch_inputs`, :func:`merge_inputs`, :func:`put_outputs`, then (issue
14) the table commit, then :func:`delete_inputs`. A :class:`Work` carries a
unit's state from one step to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.supersede import (
    input_digest,
    parse_compact_name,
    replaced_names,
    replaces_metadata,
    superseded_by,
)
from archiver.codec.concat import concatenate, copyable, read_footer
from archiver.codec.merge import FileMerge, MergeInput
from archiver.codec.merge_inputs import input_problem, time_bounds
from archiver.codec.merge_parts import MergedPart
from archiver.errors import EncodeError, ObjectExistsError, ObjectNotFoundError
from archiver.manage.compact_plan import Decision, UnitFiles, WorkUnit, part_count
from archiver.manage.compact_plan import probes as probe_names
from archiver.storage.interface import Storage

#: Concurrent downloads of one unit's inputs.
FETCH_CONCURRENCY = 16
T = TypeVar("T")


class Runner(Protocol):
    """What the steps need of the compactor running them."""

    storage: Storage
    target_bytes: int
    #: Set to abandon the unit in progress: the merge stops at its next batch.
    stop: threading.Event
    #: ``charge(+n)`` before a merge of working set ``n``, ``charge(-n)`` after (the service's memory cap).
    charge: Callable[[int], None] | None

    async def blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` off the event loop."""


@dataclass(slots=True)
class Work:
    """One unit's compaction between its steps: its files, the decision, the local inputs and parts."""

    unit: WorkUnit
    files: UnitFiles
    directory: str
    replaces: dict[str, frozenset[str] | None] = field(default_factory=dict)
    decision: Decision = field(default_factory=lambda: Decision([], frozenset(), []))
    #: With a table: the unit's v2 files not live in it (not committed yet, or removed and not deleted).
    extra: UnitFiles = field(default_factory=lambda: UnitFiles([]))
    local: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)
    parts: list[MergedPart] = field(default_factory=list)
    #: Why the unit is left as it is: ``<key>: <reason>`` for each file that cannot be merged.
    problems: list[str] = field(default_factory=list)
    #: A file vanished while it was read: another compactor moved on (the next run sees its result).
    vanished: bool = False


async def _download(compactor: Runner, work: Work, names: Sequence[str]) -> bool:
    """Fetch ``names`` into the work directory; False (``work.vanished``) when one vanished: another compactor moved on."""
    limit = asyncio.Semaphore(FETCH_CONCURRENCY)
    first = len(work.local)

    async def fetch(index: int, name: str) -> None:
        path = os.path.join(work.directory, f"{first + index:06d}.parquet")
        async with limit:
            await compactor.storage.get_file(work.files.keys[name], path)
        work.local[name] = path

    wanted = [n for n in names if n not in work.local]
    tasks = [asyncio.ensure_future(fetch(i, n)) for i, n in enumerate(wanted)]
    try:
        await asyncio.gather(*tasks)
    except BaseException as exc:
        for task in tasks:  # none may go on writing into a directory about to be removed
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if not isinstance(exc, ObjectNotFoundError):
            raise
        work.vanished = True
        return False
    return True


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


async def read_replaced(compactor: Runner, work: Work) -> bool:
    """Step 2: the replaced set of one part of every compacted group; False when one cannot be read."""
    names = probe_names(work.files.names)
    if not await _download(compactor, work, names):
        return False
    for name in names:
        try:
            metadata = await compactor.blocking(pq.read_metadata, work.local[name])
        except (pa.ArrowException, OSError) as exc:
            work.problems.append(f"{work.files.keys[name]}: {_first_line(exc)}")
            return False
        work.replaces[name] = replaced_names(name, metadata.metadata)
    return True


async def fetch_inputs(compactor: Runner, work: Work) -> bool:
    """Step 3: the live files as local files; False when one is not an archive file (never merged, so never deleted)."""
    if not await _download(compactor, work, work.decision.merge):
        return False
    for name in work.decision.merge:
        problem = await compactor.blocking(input_problem, work.local[name])
        if problem is not None:
            work.problems.append(f"{work.files.keys[name]}: {problem}")
    return not work.problems


def copy_plan(work: Work, target_bytes: int) -> list[list[str]] | None:
    """A day's inputs as parts of at most ``target_bytes`` (in time order) when their row groups can be copied
    as they are (:mod:`archiver.codec.concat`): compacted files of one hour each, no two hours alike, and
    footers that allow it. None otherwise: the merge (a late file, a day file, live or foreign files)."""
    live = work.decision.merge
    if not work.unit.is_day or any(parse_compact_name(n) is None or work.files.regions[n] for n in live):
        return None
    spans = []
    for name in live:
        low, high = time_bounds(pq.read_metadata(work.local[name]))
        if low is None or high is None or low // NS_PER_HOUR != high // NS_PER_HOUR:
            return None
        spans.append((low, high, name))
    spans.sort()
    if any(spans[i][1] >= spans[i + 1][0] for i in range(len(spans) - 1)):
        return None
    ordered = [name for _, _, name in spans]
    if not copyable([read_footer(work.local[n])[0] for n in ordered]):
        return None
    parts: list[list[str]] = []
    for name in ordered:
        if parts and sum(work.files.sizes[n] for n in parts[-1]) + work.files.sizes[name] <= target_bytes:
            parts[-1].append(name)
        else:
            parts.append([name])
    return parts


def copy_parts(work: Work, plan: list[list[str]], metadata: dict[bytes, bytes]) -> list[MergedPart]:
    """Write the parts of ``plan`` by copying their inputs' row groups (no decoding)."""
    parts = []
    for i, names in enumerate(plan):
        path = os.path.join(work.directory, f"out-{i}.parquet")
        rows = concatenate([work.local[n] for n in names], path, metadata)
        parts.append(MergedPart(path, rows, os.path.getsize(path), pq.read_metadata(path)))
    return parts


async def _copied(compactor: Runner, work: Work, metadata: dict[bytes, bytes]) -> bool:
    """Whether the unit's parts were written by copying row groups (False: they are to be merged)."""
    try:
        plan = await compactor.blocking(copy_plan, work, compactor.target_bytes)
        if plan is None:
            return False
        parts = await compactor.blocking(copy_parts, work, plan, metadata)
    except (pa.ArrowException, EncodeError, OSError, ValueError):
        return False  # the merge reads them the ordinary way (and names what is wrong, if anything)
    digest = input_digest(work.decision.merge)
    work.outputs = [work.unit.output_name(digest, i, len(plan)) for i in range(len(plan))]
    work.parts = parts
    return True


async def merge_inputs(compactor: Runner, work: Work) -> bool:
    """Step 4: merge the live files into the output parts (local files); False when stopped or it failed.

    A day of compacted hours is copied row group by row group instead (:func:`copy_plan`): the same rows
    in the same order, without decoding them.
    """
    live = work.decision.merge
    metadata = replaces_metadata(work.decision.covered)
    if await _copied(compactor, work, metadata):
        return True
    items = [MergeInput(work.local[n], work.files.regions[n]) for n in live]
    charged = 0
    try:
        # A day file's row groups end at hours: a reader of one hour decodes only its own.
        align = NS_PER_HOUR if work.unit.is_day else None
        merge = await compactor.blocking(FileMerge, items, metadata, compactor.stop, align)
        count = part_count(merge.rows, sum(work.files.sizes[n] for n in live), compactor.target_bytes)
        work.outputs = [work.unit.output_name(input_digest(live), i, count) for i in range(count)]
        paths = [os.path.join(work.directory, f"out-{i}.parquet") for i in range(count)]
        charged = merge.working_set_bytes
        if compactor.charge is not None:
            compactor.charge(charged)
        parts = await compactor.blocking(merge.write_parts, paths)
    except (pa.ArrowException, OSError, ValueError, TypeError) as exc:
        work.problems.append(
            f"{work.unit.directory}{work.unit.stamp}: cannot merge its files: {_first_line(exc)}"
        )
        return False
    finally:
        if compactor.charge is not None and charged:
            compactor.charge(-charged)
    work.parts = parts or []
    return parts is not None


async def put_outputs(storage: Storage, work: Work) -> None:
    """Step 5: upload every part, create-only (a part already there holds these very rows: a rerun or a rival)."""
    for name, part in zip(work.outputs, work.parts, strict=True):
        with contextlib.suppress(ObjectExistsError):
            await storage.put_file(f"{work.unit.directory}{name}", part.path)


def superseded(work: Work) -> list[str]:
    """Names of the unit's files the complete group of parts now supersedes (its inputs among them)."""
    return superseded_by(work.files.names, work.replaces, work.decision.covered, set(work.outputs))


async def outputs_still_there(storage: Storage, work: Work) -> bool:
    """Whether every part just uploaded is still stored (checked right before a table commit adds them).

    The orphan sweep deletes parts not live in the table once older than its margin: a compactor
    frozen that long between its upload and its commit must not add parts that are gone.
    """
    keys = [f"{work.unit.directory}{name}" for name in work.outputs]
    listed = await asyncio.gather(*(storage.list(key) for key in keys))
    return all(any(info.key == key for info in infos) for key, infos in zip(keys, listed, strict=True))


async def delete_inputs(storage: Storage, work: Work, names: Sequence[str]) -> int:
    """Step 7: delete the files ``names`` of the unit (what the group supersedes); how many."""
    await storage.delete([work.files.keys[n] for n in names])
    return len(names)
