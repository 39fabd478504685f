"""The table upkeep stage of ``archiver run`` (TABLE on): checkpoints, log clean-up, vacuum of leftovers.

Routine commits run with delta-rs's post-commit hooks off (:mod:`archiver.table.writer`), so this
stage does what they would, on a schedule, in ONE process of a queue group or ``--workers`` set:

* **election**: every :data:`TICK_S` each process claims ``_archiver/claims/=upkeep/``
  (:func:`archiver.manage.claims.acquire_prefix`, the compactor's claims: a create-only object,
  one winner); the holder renews its claim at each tick and the others skip. A holder that dies is
  recognised at once by a process on its host, after :data:`~archiver.manage.claims.LEASE_S` by
  any other (``=`` is escaped in every app segment: no app's claims share the prefix). So two
  processes never run upkeep at once; the leader's schedule lives in its memory.
* **checkpoint** once :data:`CHECKPOINT_EVERY` commits followed the last one (``_last_checkpoint``,
  shared by every process): opening the table and every commit replay the JSON commits since it.
* **log clean-up** every :data:`CLEANUP_INTERVAL_S` (delta-rs lists all of ``_delta_log/``: hourly).
* **vacuum** every :data:`VACUUM_INTERVAL_S`: our own, following the log
  (:class:`~archiver.table.vacuum.LeftoverVacuum`): files removed more than TABLE_VACUUM_RETENTION
  ago and left behind are deleted in chunks through Storage. No bucket listing: a file uploaded and
  never committed (nothing the service does leaves one for long) is not its business.

The delta-rs calls run in a worker thread, never on the event loop; while a checkpoint runs,
:data:`CHECKPOINT_CHARGE_BYTES` are charged against MAX_BUFFER_BYTES (a checkpoint of a simulated
year peaked at +139 MB RSS: the buffers flush or spill earlier instead). A failed step is logged
and tried again at the next tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from archiver.errors import ArchiverError, ObjectNotFoundError
from archiver.logs import event
from archiver.manage import claims
from archiver.service.buffer import Buffers, Room
from archiver.storage.interface import Storage
from archiver.table.log import LAST_CHECKPOINT
from archiver.table.log_files import parse_last_checkpoint
from archiver.table.vacuum import LeftoverVacuum
from archiver.table.writer import ArchiveTable

TICK_S = 60.0
CLAIM_PREFIX = f"{claims.CLAIMS_PREFIX}=upkeep/"
CHECKPOINT_EVERY = 100
CLEANUP_INTERVAL_S = 3600.0
VACUUM_INTERVAL_S = 3600.0
CHECKPOINT_CHARGE_BYTES = 150 * 1024**2


@dataclass(slots=True)
class UpkeepStats:
    """What this process's upkeep did since start."""

    checkpoints: int = 0
    cleanups: int = 0
    vacuums: int = 0
    vacuumed_files: int = 0
    failures: int = 0
    #: Whether this process held the upkeep claim at its last tick.
    leader: bool = False


class UpkeepStage:
    """Owns the upkeep task; runs the due steps while this process holds the upkeep claim."""

    def __init__(
        self,
        storage: Storage,
        table: Callable[[], ArchiveTable | None],
        vacuum_retention_s: float,
        buffers: Buffers | None = None,
        room: Room | None = None,
        tick_s: float = TICK_S,
        clock: Callable[[], float] = time.monotonic,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        """``table()``: the committer's open handle (None until open); a checkpoint is charged to ``buffers``."""
        self.storage = storage
        self._table = table
        self.buffers = buffers
        self.room = room
        self.tick_s = tick_s
        self.clock = clock
        self.checkpoint_every = checkpoint_every
        self.owner = claims.Owner.of_this_process()
        self.vacuum = LeftoverVacuum(storage, vacuum_retention_s)
        self.stats = UpkeepStats()
        self.claim: claims.Claim | None = None
        self._next_cleanup = self._next_vacuum = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the stage's task."""
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Cancel the task (a step under way in its thread finishes first), then release the claim."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        if self.claim is not None:
            await claims.release(self.storage, self.claim)
            self.claim = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            try:
                await self.tick()
            except (ArchiverError, OSError) as exc:
                self.stats.failures += 1
                event(logging.ERROR, "table upkeep failed, retrying", error=str(exc))

    async def tick(self) -> None:
        """Renew or take the claim; if held, run the steps that are due."""
        table = self._table()
        if table is None:
            return
        claim = await claims.acquire_prefix(self.storage, CLAIM_PREFIX, self.owner)
        self.stats.leader = claim is not None
        if claim is None:
            self.claim = None
            return
        with contextlib.suppress(ArchiverError):
            await self.storage.delete(claim.older)  # our previous claims (renewed) or a dead holder's
        self.claim = claims.Claim(claim.key)
        await asyncio.to_thread(_refresh, table)
        await self._checkpoint_if_due(table)
        now = self.clock()
        if now >= self._next_cleanup:
            from archiver.table.upkeep import clean_up_log

            await asyncio.to_thread(clean_up_log, table)
            self.stats.cleanups += 1
            self._next_cleanup = now + CLEANUP_INTERVAL_S
        if now >= self._next_vacuum:
            run = await self.vacuum.run(table.last_version, time.time_ns() // 1_000_000,
                                        lambda: asyncio.to_thread(_live_keys, table))  # fmt: skip
            self.stats.vacuums += 1
            self.stats.vacuumed_files += run.deleted
            self._next_vacuum = now + VACUUM_INTERVAL_S
            if run.deleted:
                event(logging.INFO, "table vacuum", deleted=run.deleted, commits_read=run.commits_read,
                      waiting=run.waiting)  # fmt: skip

    async def _checkpoint_if_due(self, table: ArchiveTable) -> None:
        try:
            newest = parse_last_checkpoint(LAST_CHECKPOINT, await self.storage.get(LAST_CHECKPOINT))[0]
        except ObjectNotFoundError:
            newest = -1
        if table.last_version - newest < self.checkpoint_every:
            return
        from archiver.table.upkeep import checkpoint

        if self.buffers is not None:
            self.buffers.hold(CHECKPOINT_CHARGE_BYTES)
        try:
            version = await asyncio.to_thread(checkpoint, table)
        finally:
            if self.buffers is not None:
                self.buffers.hold(-CHECKPOINT_CHARGE_BYTES)
            if self.room is not None:
                self.room.freed()
        self.stats.checkpoints += 1
        event(logging.INFO, "table checkpoint", version=version)


def _refresh(table: ArchiveTable) -> None:
    """Read the commits made since (by every process): the version checkpoints and vacuum go by."""
    with table.lock:
        table.last_version = table.refresh()


def _live_keys(table: ArchiveTable) -> set[str]:
    with table.lock:
        return table.live_keys()
