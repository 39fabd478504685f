"""The compactor stage of ``archiver run``: each closed app-hour merged into one file, each closed app-day rolled up.

COMPACT_AFTER (default 10m, at least FLUSH_INTERVAL; ``off`` disables the
stage) is the grace: an app-hour is compacted once its hour ended that long
ago, when late files are unlikely. A file that still arrives later makes it
due again COMPACT_AFTER after that file was written. An app-day is rolled up
into day files (:mod:`archiver.manage.compact_plan`) once it ended
ROLLUP_GRACE_S (1 h) + COMPACT_AFTER ago, after its hours; a late file of a
rolled-up day is merged into it COMPACT_AFTER after its hour's compaction.
A year of 50 apps is then ~18k day files instead of ~440k hour files
(one per app-day while an app-day compacts to at most COMPACT_TARGET_BYTES;
BENCHMARKS.md, "the day roll-up").

Discovery, oldest hour first:

* the app-hours this process wrote files of (in memory, from the uploader);
* a scan every :data:`SCAN_INTERVAL_S` of the last two UTC days of every app
  (one delimiter listing of the root, then one listing per app-day), which
  finds the hours other processes wrote and work left by a crash;
* at start, the same scan over *every* day of every app (one listing of each
  app's days, then one per day): hours of a time the service was down, and
  an old archive's schema-v1 files, which compaction rewrites as v2. It also
  deletes the claims of compactors that died after their work.

One unit at a time, through the same steps and claims as ``archiver compact``
(:class:`archiver.manage.compact.Compactor`): several archivers in a queue
group, ``--workers`` and a manual ``archiver compact`` never work on one
app-hour at once. Storage I/O is asynchronous; footers and the merge run in
this stage's own thread (niced: ingest comes first on a busy CPU), never on
the event loop. While a merge runs, its
working set (estimated from the inputs' footers, at most half the cap) is
charged against MAX_BUFFER_BYTES (:meth:`archiver.service.buffer.Buffers.hold`):
ingest flushes and spills earlier rather than exceeding the cap.

At shutdown (SIGTERM) no new app-hour is started, and the one in progress
finishes, in parallel with the final flush, within :data:`STOP_GRACE_S`
(so a glob reader is left no hour counted twice). Past that, or at a second
signal, it is abandoned: its merge stops at the next record batch, the parts
already uploaded stay as an incomplete group that every reader's rule
ignores (a glob reader counts them) and its claim is released; the next
start's scan finds the hour and does it again (same inputs, same names). A
kill -9 at any point is the same, with the claim recognised as dead by the
restarted process on this host, and expired after 15 minutes for any other.

A failed compaction (storage down) is counted, logged and retried after
:data:`RETRY_S`; a unit refused for a file that is not an archive file is
named in one warning and left until its files change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from archiver.archive.layout import NS_PER_DAY, NS_PER_SECOND
from archiver.archive.navigator import listed_app_segments
from archiver.config import RunConfig
from archiver.manage import claims
from archiver.manage.compact import Compactor
from archiver.manage.compact_plan import (
    ROLLUP_GRACE_S,
    UnitFiles,
    WorkUnit,
    list_units,
    needs_work,
    work_order,
)
from archiver.manage.compact_result import UnitResult
from archiver.manage.compact_table import TableLink, split
from archiver.manage.scratch import fresh_scratch
from archiver.service.buffer import Buffers, Room
from archiver.service.compaction_metrics import CompactionStats, compaction_seconds
from archiver.storage.interface import ObjectInfo, Storage

#: How often the last two days are scanned for work others left.
SCAN_INTERVAL_S = 300.0
#: A failed compaction is tried again this much later.
RETRY_S = 60.0
#: At shutdown the app-hour in progress may finish within this (in parallel with the final flush; Fly's
#: kill_timeout in fly.toml is 120 s); past it, it is abandoned.
STOP_GRACE_S = 30.0
#: Nice value of the compactor's thread: ingest (the event loop, the encoder) comes first on a busy CPU.
COMPACT_NICE = 10
_log = logging.getLogger("archiver.compact")


class CompactorStage:
    """Owns the compaction task, its thread and its scratch directory."""

    def __init__(
        self,
        storage: Storage,
        config: RunConfig,
        buffers: Buffers,
        room: Room,
        clock_ns: Callable[[], int] = time.time_ns,
        table: TableLink | None = None,
    ) -> None:
        assert config.compact_after_s is not None
        self.after_ns = int(config.compact_after_s * 1e9)
        self.storage = storage
        self.buffers = buffers
        self.room = room
        self.clock_ns = clock_ns
        self.stats = CompactionStats()
        self.seconds = compaction_seconds()
        # In the spool's directory when there is one (a volume with room); else a temporary one.
        self.scratch_dir = os.path.join(config.spool_dir, "compact") if config.spool_dir else None
        self._executor = ThreadPoolExecutor(
            1, thread_name_prefix="archiver-compact", initializer=_lower_priority
        )
        self._max_charge = config.max_buffer_bytes // 2
        self.compactor = Compactor(storage, "", config.compact_target_bytes, executor=self._executor,
                                   charge=self._charge, table=table)  # fmt: skip
        #: Units to do, by when they are due (wall ns).
        self.pending: dict[WorkUnit, int] = {}
        self.backlog: set[WorkUnit] = set()
        #: Units refused for a file that is not an archive file, with the listing that was refused.
        self.refused: dict[WorkUnit, list[str]] = {}
        self._task: asyncio.Task[None] | None = None
        self._halt = asyncio.Event()

    def noted(self, app: str, hour_ns: int) -> None:
        """The uploader wrote a file of ``app`` in the hour starting at ``hour_ns``: its hour, then its day."""
        now = self.clock_ns()
        hour = WorkUnit(app, hour_ns)
        closed = hour.end_ns + self.after_ns
        due = closed if now < closed else now + self.after_ns  # a late file: wait a grace after it
        self.pending[hour] = max(due, self.pending.get(hour, 0))
        day = WorkUnit(app, hour_ns - hour_ns % NS_PER_DAY, NS_PER_DAY)
        # A late file of a day rolled up: merged into it once its hour had its compaction.
        self.pending[day] = max(self._day_due(day), due + self.after_ns, self.pending.get(day, 0))

    def _day_due(self, day: WorkUnit) -> int:
        """When a day is rolled up at the soonest: ROLLUP_GRACE_S and COMPACT_AFTER after it ended."""
        return day.end_ns + ROLLUP_GRACE_S * NS_PER_SECOND + self.after_ns

    def start(self) -> None:
        """Start the stage's task."""
        self._task = asyncio.create_task(self._run())

    async def stop(self, grace_s: float = 0.0) -> None:
        """Take no new unit; let the one in progress finish within ``grace_s``, else abandon it; await everything."""
        self._halt.set()
        if self._task is not None and grace_s > 0:
            await asyncio.wait({self._task}, timeout=grace_s)
        self.compactor.stop.set()  # the merge stops at its next batch
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)
        if self.scratch_dir is None and self.compactor.scratch_dir:
            shutil.rmtree(self.compactor.scratch_dir, ignore_errors=True)

    def _charge(self, memory_bytes: int) -> None:
        sign = 1 if memory_bytes > 0 else -1
        self.buffers.hold(sign * min(abs(memory_bytes), self._max_charge))
        if memory_bytes < 0:
            self.room.freed()

    async def _run(self) -> None:
        self.compactor.scratch_dir = await asyncio.get_running_loop().run_in_executor(
            self._executor, fresh_scratch, self.scratch_dir
        )
        table = self.compactor.table
        while table is not None and not table.ready() and not self._halt.is_set():
            # The committer opens (or at the first start creates) the table: the first scan needs it.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._halt.wait(), 0.5)
        await self._scan_safely(full=True)
        next_scan = time.monotonic() + SCAN_INTERVAL_S
        while not self._halt.is_set():
            if time.monotonic() >= next_scan:
                await self._scan_safely(full=False)
                next_scan = time.monotonic() + SCAN_INTERVAL_S
            unit = self._next_due()
            if unit is None:
                # A unit noted meanwhile is due COMPACT_AFTER later at the soonest: look again well before.
                idle_s = max(0.1, min(5.0, self.after_ns / 2e9, next_scan - time.monotonic()))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._halt.wait(), idle_s)
                continue
            await self._compact(unit)

    def _next_due(self) -> WorkUnit | None:
        """The oldest unit that is due, if any."""
        now = self.clock_ns()
        due = [unit for unit, when in self.pending.items() if when <= now]
        return min(due, key=work_order) if due else None

    async def _compact(self, unit: WorkUnit) -> None:
        del self.pending[unit]
        try:
            result = await self.compactor.compact(unit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage down, or a bug: counted, logged, tried again later
            self.stats.failures += 1
            self.pending[unit] = self.clock_ns() + int(RETRY_S * 1e9)
            _log.error("compaction failed, retrying later", exc_info=exc,
                       extra={"fields": {"app": unit.app, "hour": unit.when, "error": str(exc)}})  # fmt: skip
            return
        self._record(result)

    def _record(self, result: UnitResult) -> None:
        unit = result.unit
        if result.outcome in ("compacted", "cleaned", "done"):
            self.backlog.discard(unit)
            self.stats.backlog = len(self.backlog)
        self.stats.orphans += result.orphans
        if result.outcome == "compacted":  # the Compactor logged its line
            s = self.stats
            if unit.is_day:
                s.rollups += 1
            else:
                s.compactions += 1
            s.bytes_in, s.bytes_out, s.rows = (
                s.bytes_in + result.bytes_in,
                s.bytes_out + result.bytes_out,
                s.rows + result.rows,
            )
            s.files_in, s.files_out = s.files_in + result.files_in, s.files_out + result.files_out
            self.seconds.observe(result.seconds)
        elif result.outcome == "skipped":
            self.refused[unit] = []  # filled by the next scan that sees the same files
            for problem in result.problems:
                _log.warning("compaction skipped: its app-hour is left as it is",
                             extra={"fields": {"app": unit.app, "hour": unit.when, "problem": problem}})  # fmt: skip

    async def _scan_safely(self, full: bool) -> None:
        try:
            await self._scan(full)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # storage down: the next scan tries again
            _log.error("compaction scan failed", extra={"fields": {"error": str(exc)}})

    async def _scan(self, full: bool) -> None:
        """Find the closed app-hours that need work (see the module docstring); the backlog."""
        now = self.clock_ns()
        closed_by = now - self.after_ns
        days_by = closed_by - ROLLUP_GRACE_S * NS_PER_SECOND
        since = None if full else now - now % NS_PER_DAY - NS_PER_DAY
        backlog: set[WorkUnit] = set()
        table, live = self.compactor.table, None
        for segment in await listed_app_segments(self.storage):  # one at a time: a full scan's listing is big
            units = await list_units(self.storage, [segment], closed_by, since, days_until_ns=days_by)
            for unit, infos in units.items():
                extra: list[ObjectInfo] = []
                if table is not None:  # the view of a table reader: its live files (and v1 files)
                    live = await table.live_keys() if live is None else live
                    infos, extra = split(infos, live)
                if not needs_work(infos) and not extra:
                    continue
                if not unit.is_day:  # the gauge counts app-hours, as documented
                    backlog.add(unit)
                names = UnitFiles(infos).names
                if unit in self.refused and self.refused[unit] in ([], names):
                    self.refused[unit] = names  # still the files it refused: not again until they change
                    continue
                self.refused.pop(unit, None)
                self.pending.setdefault(
                    unit, self._day_due(unit) if unit.is_day else unit.end_ns + self.after_ns
                )
        if full:
            self.backlog = backlog
            await claims.sweep(self.storage, self.compactor.owner)
        else:  # the days before the scanned ones keep what the last full scan found there
            self.backlog = {u for u in self.backlog if since is not None and u.start_ns < since} | backlog
        self.stats.backlog = len(self.backlog)


def _lower_priority() -> None:
    """Make the compactor's thread yield the CPU to ingest when both want it (Linux: a thread's own nice value)."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), COMPACT_NICE)
