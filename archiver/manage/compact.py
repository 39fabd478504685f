"""Compaction: merge the many small files of each closed app-hour into one sorted file (``archiver compact`` and the service).

Design. The unit is one *app-hour* (:class:`~archiver.manage.compact_plan.WorkUnit`):
every file of one app (as keys give it back) in one UTC hour, all regions,
v2 files under ``app=X/date=D/YYYYMMDDTHH`` and v1 files under
``app=X1/date=D/hour=HH/region=*/``. It is *closed* once its hour ended
(``archiver compact --before``: by ``min(--before, now)``; the service:
COMPACT_AFTER ago); an hour still running is never touched, a late file is
merged by the next run. A unit whose listing, resolved by
:func:`archiver.archive.supersede.resolve` (what a query would read), is
anything but one complete v2 compaction goes through these steps, each a
function here so that issue 14's table commit slots in between *put* and
*delete*:

1. :func:`~archiver.manage.claims.acquire` a claim (skip the unit if another
   process holds it), then list the unit again: the view the work is done on;
2. :func:`read_replaced`: fetch one part of every compacted group and read its
   ``archiver.replaces``; :func:`~archiver.manage.compact_plan.decide` then says
   what is live (or that only a crash's leftovers need deleting);
3. :func:`fetch_inputs`: download the live files to a scratch directory, and
   refuse the unit if any is not an archive file of schema v1 or v2;
4. :func:`merge_inputs`: the streaming merge (:class:`~archiver.codec.merge.FileMerge`,
   in a worker thread) in the order of concatenating the inputs by relative
   name and sorting by exact time, stably, into ``ceil(rows / rows_per_file)``
   parts (``rows_per_file`` from the inputs' bytes per row, so each stays under
   ``COMPACT_TARGET_BYTES``) at zstd level
   :data:`~archiver.codec.encode.COMPACT_COMPRESSION_LEVEL`, named
   ``<YYYYMMDDTHH>-c-<digest>-<part>of<count>.parquet`` (``digest`` hashes the
   sorted input names), each carrying ``archiver.replaces``: every file
   superseded, transitively (names relative to ``app=X/date=D/``);
5. :func:`put_outputs`: upload every part create-only (:meth:`Storage.put_file`);
6. when the archive is a Delta table, one guarded commit removing the inputs (and
   whatever step 7 deletes) and adding the parts, and the unit's view is the table's
   (:mod:`archiver.manage.compact_table`);
7. :func:`delete_inputs`: only then delete the inputs, and any compacted file
   whose replaced set lies within the new one (with a table too, at once: a glob
   reader never counts a completed compaction twice);
8. :func:`~archiver.manage.claims.release` the claim.

Why this never loses or duplicates a row (claims or not):

* Crash anywhere, then rerun: the same listing gives the same inputs, hence the
  same names; a part already written is skipped (``ObjectExistsError``); a
  group with a part missing is ignored by readers and rewritten; inputs left
  after a crash during deletion are recognised from ``archiver.replaces`` and
  deleted. Rerunning on a compacted archive changes nothing (idempotent).
* A query listing in the middle applies the same rule, so it reads either the
  inputs or the complete group, never both; a file deleted between its listing
  and its read makes it re-list that hour before printing any of it.
* Two compactors at once (a lease expired): with the same view they write the
  same names (the second write is refused and ignored); with different views
  (a late file arrived in between) the group that replaces more wins in every
  reader, and the next run deletes the other.

Memory does not grow with the unit: inputs and parts are files, merged a
record batch at a time (:mod:`archiver.codec.merge`).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Any, TypeVar

from archiver.archive.layout import NS_PER_DAY, NS_PER_SECOND
from archiver.archive.navigator import app_selection
from archiver.manage import claims
from archiver.manage.compact_plan import (
    ROLLUP_GRACE_S,
    UnitFiles,
    WorkUnit,
    decide,
    list_unit,
    list_units,
    needs_work,
)
from archiver.manage.compact_result import CompactStats, UnitResult, describe
from archiver.manage.compact_steps import (
    Work,
    delete_inputs,
    fetch_inputs,
    merge_inputs,
    outputs_still_there,
    put_outputs,
    read_replaced,
    superseded,
)
from archiver.manage.compact_table import ORPHAN_AGE_S, TableLink, leftover_keys, orphan_keys
from archiver.manage.scratch import fresh_scratch
from archiver.storage.interface import ObjectInfo, Storage

_log = logging.getLogger("archiver.compact")  # the name it had before the move: users filter on it
T = TypeVar("T")
Say = Callable[[str], None]


class Compactor:
    """Runs the steps for one unit at a time (the service's stage and ``archiver compact`` both use it)."""

    def __init__(
        self,
        storage: Storage,
        scratch_dir: str,
        target_bytes: int,
        *,
        executor: Executor | None = None,
        charge: Callable[[int], None] | None = None,
        table: TableLink | None = None,
    ) -> None:
        """``executor`` runs the blocking work (footers, the merge); ``charge(+n)``/``charge(-n)`` around a merge.

        With ``table`` the archive is a Delta table: see :mod:`archiver.manage.compact_table`.
        """
        self.storage = storage
        self.scratch_dir = scratch_dir
        self.target_bytes = target_bytes
        self.executor = executor
        self.charge = charge
        self.table = table
        self.owner = claims.Owner.of_this_process()
        #: Set to abandon the unit in progress (shutdown): the merge stops at its next batch.
        self.stop = threading.Event()
        #: CPU seconds of the blocking work (footers, the merge, writing parts), in its threads.
        self.cpu_seconds = 0.0
        #: A compacted or day file not live in the table is an orphan once this old (tests lower it).
        self.orphan_age_s = ORPHAN_AGE_S

    async def blocking(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` off the event loop (its thread's CPU time is added to :attr:`cpu_seconds`)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, self._timed, function, *args)

    def _timed(self, function: Callable[..., T], *args: Any) -> T:
        started = time.thread_time()
        try:
            return function(*args)
        finally:
            self.cpu_seconds += time.thread_time() - started

    async def compact(self, unit: WorkUnit, infos: Sequence[ObjectInfo] | None = None) -> UnitResult:
        """Compact ``unit`` (already listed as ``infos``, or not): claim, list, decide, merge, put, delete, release."""
        extra: list[ObjectInfo] = []
        if infos is not None and self.table is not None:
            infos, extra = await self.table.view(unit, infos)
        if infos is not None and not needs_work(infos) and not extra:
            return UnitResult(unit, "done")
        claim = await claims.acquire(self.storage, unit, self.owner)
        if claim is None:
            return UnitResult(unit, "claimed")
        claimed_ns, began = time.time_ns(), time.monotonic()
        try:
            listed = await list_unit(self.storage, unit)
            if self.table is not None:
                listed, extra = await self.table.view(unit, listed)
            files = UnitFiles(listed)  # the view the work is done on
            directory = await self.blocking(tempfile.mkdtemp, "", "unit-", self.scratch_dir)
            try:
                result = await self._steps(Work(unit, files, directory, extra=UnitFiles(extra)))
            finally:
                await self.blocking(shutil.rmtree, directory, True)
        finally:
            await claims.release(self.storage, claim)
        result.seconds = time.monotonic() - began
        if result.outcome in ("compacted", "cleaned"):
            # One line per app-hour (or app-day); the claim's times show that no two processes worked on it
            # at once.
            fields = {"app": unit.app, "day" if unit.is_day else "hour": unit.when, "files_in": result.files_in,
                      "bytes_in": result.bytes_in, "files_out": result.files_out, "bytes_out": result.bytes_out,
                      "rows": result.rows, "deleted": result.deleted, "orphans": result.orphans,
                      "seconds": round(result.seconds, 3), "owner": self.owner.token, "claimed_ns": claimed_ns,
                      "released_ns": time.time_ns()}  # fmt: skip
            message = "rolled up" if unit.is_day and result.outcome == "compacted" else result.outcome
            _log.info(message, extra={"fields": fields})
        return result

    def _refused(self, work: Work) -> UnitResult:
        """The result of a unit left as it is: stopped, a file vanished, or files that cannot be merged."""
        if self.stop.is_set() and not work.problems:
            return UnitResult(work.unit, "stopped")
        return UnitResult(work.unit, "vanished" if work.vanished else "skipped", problems=work.problems)

    async def _steps(self, work: Work) -> UnitResult:
        unit = work.unit
        if not needs_work(ObjectInfo(k, 0) for k in work.files.keys.values()) and not work.extra.names:
            return UnitResult(unit, "done")
        if not await read_replaced(self, work):
            return self._refused(work)
        work.decision = decide(work.files.names, work.replaces)
        leftovers = leftover_keys(work)
        if not work.decision.merge:
            garbage = work.decision.garbage
            orphans = self._orphans(work, leftovers)
            if not garbage and not leftovers and not orphans:
                return UnitResult(unit, "done")  # only files not committed yet besides the group
            if self.table is not None and not await self.table.try_commit(work, garbage):
                return UnitResult(unit, "vanished")
            await self.storage.delete([work.files.keys[n] for n in garbage] + leftovers + orphans)
            return UnitResult(unit, "cleaned", deleted=len(garbage) + len(leftovers) + len(orphans),
                              orphans=len(orphans))  # fmt: skip
        if not await fetch_inputs(self, work) or not await merge_inputs(self, work):
            return self._refused(work)
        await put_outputs(self.storage, work)
        doomed = superseded(work)
        if self.table is not None and not (
            await outputs_still_there(self.storage, work) and await self.table.try_commit(work, doomed)
        ):
            return UnitResult(unit, "vanished")
        deleted = await delete_inputs(self.storage, work, doomed)
        orphans = self._orphans(work, leftovers)
        await self.storage.delete(leftovers + orphans)
        deleted += len(leftovers) + len(orphans)
        live = work.decision.merge
        return UnitResult(unit, "compacted", files_in=len(live), bytes_in=sum(work.files.sizes[n] for n in live),
                          files_out=len(work.parts), bytes_out=sum(p.size for p in work.parts),
                          rows=sum(p.rows for p in work.parts), deleted=deleted, orphans=len(orphans))  # fmt: skip

    def _orphans(self, work: Work, leftovers: Sequence[str]) -> list[str]:
        """With a table: the unit's compacted and day files that lost their commit (:func:`orphan_keys`)."""
        if self.table is None:
            return []
        found = orphan_keys(work, time.time_ns(), self.orphan_age_s, work.outputs)
        return [key for key in found if key not in set(leftovers)]


async def compact_archive(
    storage: Storage,
    apps: Sequence[str],
    before_ns: int,
    target_bytes: int,
    say: Say | None = None,
    now_ns: int | None = None,
    table: TableLink | None = None,
    roll_up: bool = True,
) -> CompactStats:
    """Compact every closed app-hour of ``apps`` (every app when empty), oldest first; roll up the closed days.

    Closed: an hour ended by ``min(before_ns, now_ns)`` (``now_ns`` defaults to the clock), a day
    :data:`~archiver.manage.compact_plan.ROLLUP_GRACE_S` before that; a day is worked after its hours
    (``roll_up`` False: hours only).
    """
    stats = CompactStats()
    before_ns = min(before_ns, time.time_ns() if now_ns is None else now_ns)
    selection = await app_selection(storage, apps)
    days_until = before_ns - ROLLUP_GRACE_S * NS_PER_SECOND
    units = await list_units(storage, selection.segments, before_ns, apps=selection if apps else None,
                             days_until_ns=days_until if roll_up else None)  # fmt: skip
    # Named by this process's id, so a later run deletes it if this one is killed (kill -9 skips cleanups).
    scratch = fresh_scratch(None)
    try:
        compactor = Compactor(storage, scratch, target_bytes, table=table)
        refused: set[int] = set()  # days with an hour left as it is (files that cannot be merged)
        for unit, infos in units.items():
            day = unit.start_ns - unit.start_ns % NS_PER_DAY
            if unit.is_day and day in refused:
                stats.add(UnitResult(unit, "skipped"))  # its hour's files were named already
                continue
            result = await compactor.compact(unit, infos)
            if result.outcome == "skipped":
                refused.add(day)
            stats.add(result)
            for line in describe(result):
                if result.outcome == "skipped":
                    _log.warning(line)
                if say is not None:
                    say(line)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    await claims.sweep(storage, compactor.owner)  # leftovers of a compactor killed after its work
    return stats
