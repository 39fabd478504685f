"""The committer stage of ``archiver run`` (TABLE on): uploaded files become part of the Delta table, exactly once.

The uploader journals a batch's intent, uploads its files, then hands them here
(:meth:`Committer.uploaded`); this stage commits them and only then journals the
batch *done*. So a batch stays in the spool and journal until its files are in the
table: a crash at any point replays it under the keys its intent fixed, and a commit
that keeps failing (storage down, a damaged log, a conflict storm) loses nothing.

JetStream acks do not wait for the commit: the uploader acks once the files are uploaded,
the intent journaled and the spool fsynced, as the spool keeps the records until *done*
(:meth:`Committer.low_water_seq`). Waiting up to TABLE_COMMIT_INTERVAL would outlast the ack
wait and, with ``max_ack_pending``, throttle delivery; a commit per flush would cost 0.25 CPU s
each at a simulated year. The spool holds ~TABLE_COMMIT_INTERVAL more (bounded: SPOOL_MAX_BYTES).

Exactly once (design14.md): every live file's name carries its writer id and
sequence (:func:`~archiver.archive.layout.object_name`). The files of one writer are
committed in sequence order, a group at a time, each commit carrying the app
transaction ``(writer id, highest sequence in it)``; before committing, the table is
refreshed and sequences at or below the writer's recorded version are left out
(:meth:`~archiver.table.writer.ArchiveTable.commit_sequence`): that is a batch
replayed after kill -9 whose commit had landed. In order means: a file is committed
only once every lower sequence of its writer is uploaded too
(:meth:`Committer.expect` is told each sequence as soon as it is fixed, before its
upload), so a recorded version never covers a file not yet committed. A restarted
process has a new writer id; the batches its spool replays keep their old keys, so
they are committed under the old writer id, whose recorded version says what is done.
Each process (each ``--workers`` worker, each archiver of a queue group) commits
under its own ids: concurrent commits never contend for one app transaction, and
delta-rs retries a plain append that met another's commit.

Commits are grouped: one every TABLE_COMMIT_INTERVAL (default 60 s: the table's
cost grows with commits, BENCHMARKS.md), sooner when :data:`COMMIT_SOON_FILES` wait,
and at shutdown. They run in this stage's own thread (delta-rs calls block).

At start, with no table yet, the stage creates it from the files already in the
archive (:mod:`archiver.manage.table_init`), leaving out this process's own files
(its committer adds those). A table that cannot be opened (a damaged or foreign
object in ``_delta_log/``, named in the error) or commits that fail are retried with
backoff; ``/health`` and ``/metrics`` show it while ingest goes on into the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass

from archiver.archive.layout import parse_key
from archiver.config import ArchiveSettings
from archiver.errors import ArchiverError
from archiver.logs import RateLimitedLog, event
from archiver.service.buffer import FlushBatch
from archiver.service.journal import Intent
from archiver.service.spool import Spool
from archiver.service.table_metrics import TableStats, commit_seconds
from archiver.storage.interface import Storage
from archiver.table.files import TableFile
from archiver.table.writer import ArchiveTable

#: Commit before the interval is up once this many files wait.
COMMIT_SOON_FILES = 2000
RETRY_BASE_S, RETRY_CAP_S = 1.0, 60.0
#: A writer's file: (writer id, sequence).
FileId = tuple[str, int]


@dataclass(slots=True)
class _Waiting:
    """An uploaded batch whose files are not all committed yet."""

    batch: FlushBatch
    intent: Intent
    remaining: set[FileId]


class Committer:
    """Owns the commit task and its thread, and the uploaded batches not yet committed."""

    def __init__(
        self,
        settings: ArchiveSettings,
        storage: Storage,
        spool: Spool | None,
        journal_executor: Executor,
        interval_s: float,
        on_archived: Callable[[FlushBatch], None] | None = None,
        on_file: Callable[[str, int], None] | None = None,
    ) -> None:
        """``on_archived(batch)`` once a batch is committed and journaled done (the pipeline passes none: acks go at upload)."""
        self.settings = settings
        self.storage = storage
        self.spool = spool
        self.interval_s = max(interval_s, 0.1)  # 0: as soon as possible, without spinning
        self._journal_executor = journal_executor
        self._on_archived = on_archived
        #: ``on_file(app, hour_ns)`` once a file of that app-hour is committed (the compactor's due list:
        #: a table compaction sees only committed files, so an upload is not yet a reason to compact).
        self._on_file = on_file
        self.stats = TableStats()
        self.seconds = commit_seconds()
        self.table: ArchiveTable | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="archiver-table")
        #: Sequences fixed (an intent names them) and not uploaded yet, by writer.
        self._expected: dict[str, set[int]] = {}
        #: Uploaded, not committed: sequence -> the batch's files of that sequence, by writer.
        self._ready: dict[str, dict[int, list[TableFile]]] = {}
        self._waiting: dict[int, _Waiting] = {}
        self._owner: dict[FileId, int] = {}
        #: Every writer id whose files this process commits (bootstrap leaves them out).
        self.writers: set[str] = set()
        self.failing_since_s: float | None = None
        self.last_error: str | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._log_error = RateLimitedLog("table commit failed, retrying", level=logging.ERROR)

    # -- hand-offs from the uploader ----------------------------------------------------

    def expect(self, writer: str, seq: int) -> None:
        """A file of ``writer`` with sequence ``seq`` is to be uploaded: no higher one commits before it."""
        self._expected.setdefault(writer, set()).add(seq)
        self.writers.add(writer)

    def forget(self, writer: str, seq: int) -> None:
        """An expected file will never come (its batch failed to encode)."""
        self._expected.get(writer, set()).discard(seq)

    def uploaded(self, batch: FlushBatch, intent: Intent, files: list[tuple[FileId, TableFile]]) -> None:
        """A batch's files are uploaded: commit them (then journal the batch done)."""
        batch_id = id(batch)
        self._waiting[batch_id] = _Waiting(batch, intent, {file_id for file_id, _ in files})
        for (writer, seq), file in files:
            self._expected.get(writer, set()).discard(seq)
            self._ready.setdefault(writer, {}).setdefault(seq, []).append(file)
            self._owner[(writer, seq)] = batch_id
        if not files or self.uncommitted_files >= COMMIT_SOON_FILES:
            self._wake.set()

    # -- what the other stages read -------------------------------------------------------

    @property
    def uncommitted_files(self) -> int:
        """Files uploaded and not yet committed."""
        return sum(len(files) for ready in self._ready.values() for files in ready.values())

    def oldest_uncommitted_ns(self) -> int | None:
        """Arrival time of the oldest payload of a batch uploaded and not yet committed."""
        return min((w.batch.opened_ns for w in self._waiting.values() if w.batch.opened_ns), default=None)

    def low_water_seq(self, default: int) -> int:
        """Oldest spool sequence a batch not yet committed still covers."""
        return min([default, *(w.batch.first_seq for w in self._waiting.values())])

    def gauges(self) -> tuple[int, float]:
        """(uncommitted files, age in seconds of the oldest uncommitted batch) for ``/metrics``."""
        oldest = self.oldest_uncommitted_ns()
        return self.uncommitted_files, 0.0 if oldest is None else max(0.0, (time.time_ns() - oldest) / 1e9)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the commit task."""
        self._task = asyncio.create_task(self._run())

    async def flush(self) -> None:
        """Commit everything uploaded so far, retrying until it is in the table (shutdown)."""
        attempt = 0
        while self._waiting:
            if (self.table is not None or await self._open_once()) and await self._commit_ready():
                return  # what is left waits for uploads that never came (a stop cut them short)
            attempt += 1
            await asyncio.sleep(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempt, 6)))

    async def stop(self) -> None:
        """Cancel the commit task and await it; shut the thread (a commit under way finishes first)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown, True)

    async def _run(self) -> None:
        attempt = 0
        while self.table is None:
            if not await self._open_once():
                attempt += 1
                await asyncio.sleep(min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempt, 6)))
        attempt = 0
        while True:
            delay = self.interval_s if attempt == 0 else min(RETRY_CAP_S, RETRY_BASE_S * 2 ** min(attempt, 6))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)
            self._wake.clear()
            attempt = 0 if await self._commit_ready() else attempt + 1

    async def _open_once(self) -> bool:
        """Open the table, creating it from the archive's files if there is none; False (noted) on failure."""
        async with self._lock:
            return self.table is not None or await self._open()

    async def _open(self) -> bool:
        from archiver.manage.table_init import describe, init_table

        loop = asyncio.get_running_loop()
        try:
            table = await loop.run_in_executor(self._executor, ArchiveTable.open, self.settings)
            if table is None:
                registration, v1_files = await init_table(self.settings, self.storage, set(self.writers))
                for line in describe(self.settings.url, registration, v1_files):
                    event(logging.WARNING if line.startswith("warning") else logging.INFO, line)
                table = await loop.run_in_executor(self._executor, ArchiveTable.open, self.settings)
        except ArchiverError as exc:
            self._failed(exc)
            return False
        self.table = table
        return table is not None

    def _prefix(self, writer: str) -> dict[int, list[TableFile]]:
        """The writer's uploaded files that may be committed now: those below every sequence still expected."""
        ready = self._ready.get(writer, {})
        below = min(self._expected.get(writer) or [float("inf")])
        return {seq: files for seq, files in sorted(ready.items()) if seq < below}

    async def _commit_ready(self) -> bool:
        """Commit what may be committed, a group per writer; False (noted) when a commit failed."""
        async with self._lock:  # the task and a shutdown's flush: one at a time
            return await self._commit_groups()

    async def _commit_groups(self) -> bool:
        table = self.table
        if table is None:
            return False
        loop = asyncio.get_running_loop()
        for writer in list(self._ready):
            group = self._prefix(writer)
            if not group:
                continue
            started = time.monotonic()
            try:
                added = await loop.run_in_executor(self._executor, table.commit_sequence, writer, group)
            except ArchiverError as exc:
                self._failed(exc)
                return False
            self.seconds.observe(time.monotonic() - started)
            count = sum(len(files) for files in group.values())
            self.stats.commits += added > 0
            self.stats.files += added
            self.stats.already_committed += count - added
            await self._committed(writer, list(group))
        for waiting in [w for w in self._waiting.values() if not w.remaining]:  # batches without files
            del self._waiting[id(waiting.batch)]
            await self._settle(waiting)
        if self.failing_since_s is not None:
            event(
                logging.INFO,
                "table commits recovered",
                failed_for_s=round(time.monotonic() - self.failing_since_s, 1),
            )
        self.failing_since_s = self.last_error = None
        return True

    async def _committed(self, writer: str, seqs: list[int]) -> None:
        """Journal done (and hand on) every batch whose files are now all in the table."""
        ready = self._ready[writer]
        settled = []
        for seq in seqs:
            if self._on_file is not None:
                for file in ready[seq]:
                    if (parsed := parse_key(file.key)) is not None:
                        self._on_file(file.app, parsed.hour_ns)
            del ready[seq]
            batch_id = self._owner.pop((writer, seq))
            waiting = self._waiting[batch_id]
            waiting.remaining.discard((writer, seq))
            if not waiting.remaining:
                settled.append(self._waiting.pop(batch_id))
        if not ready:
            del self._ready[writer]
        for waiting in settled:
            await self._settle(waiting)

    async def _settle(self, waiting: _Waiting) -> None:
        if self.spool is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._journal_executor, self.spool.write_done, waiting.intent
            )
        if self._on_archived is not None:
            self._on_archived(waiting.batch)

    def _failed(self, exc: ArchiverError) -> None:
        self.stats.failures += 1
        self.last_error = str(exc)
        if self.failing_since_s is None:
            self.failing_since_s = time.monotonic()
        self._log_error(error=str(exc), uncommitted_files=self.uncommitted_files)
