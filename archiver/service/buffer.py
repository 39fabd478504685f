"""Per-partition buffers and the flush policy (pure: no I/O, injectable clock).

A partition is one (app, region). The message callback appends raw payload
bytes to its :class:`PartitionBuffer`; everything else happens here, off the
hot path:

* a partition is *due* when its buffered bytes reach ``flush_bytes`` or its
  oldest buffered message has waited ``flush_interval_s``;
* when the bytes held in memory (open buffers plus detached batches still
  being encoded or uploaded) exceed ``max_buffer_bytes``, the largest open
  partitions are detached early until the open bytes are back under half
  the cap (their uploads are what frees memory); while the total is at or
  over the cap, :meth:`Buffers.has_room` is false and the caller applies
  back-pressure until uploads settle;
* a partition with nothing new is never flushed.

:class:`Room` turns the cap into a signal: who finds no room waits on it,
and the uploader, freeing memory, wakes them.

A partition buffer *is* a :class:`~archiver.codec.payloads.Payloads` (one
``bytearray`` with an array of end offsets) whose data is handed over as the
batch when detached (why: that module's docstring; RSS had stayed ~200 MiB
above the bytes held with a list of ``bytes``, BENCHMARKS.md).

The memory cap counts what the bytes really cost: each payload is charged
:data:`PAYLOAD_OVERHEAD_BYTES` on top of its length, and a detached batch is
also charged the working set its encoding will need
(:data:`ENCODE_WORKING_SET_RATIO`) until the uploader replaces the charge by
its files' size (:meth:`Buffers.charge`). Reserving it at detach time, not
when the encode starts, is what keeps the peak near the cap: the hot path
spills to the spool while a backlog of detached batches waits to be encoded,
instead of refilling the buffers that the encodes then add to. Another
stage's working set (the compactor's merge) is charged too while it runs
(:meth:`Buffers.hold`): the largest partitions then flush, and new messages
spill, earlier. What the counts miss (the interpreter and its libraries, the open Delta
table, allocator slack) the resident size shows: given a ``resident`` reader,
:meth:`Buffers.measure` charges the resident bytes beyond the counts and
:data:`FOOTPRINT_BYTES` like a hold (:attr:`Buffers.excess_bytes`), so RSS
stays near MAX_BUFFER_BYTES + FOOTPRINT_BYTES (BENCHMARKS.md). Holds count
for at most :data:`MAX_HELD_SHARE` of the cap; under pressure the open bytes
go down to half of what they leave.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from archiver.archive.escaping import decode_value, partition_value
from archiver.codec.payloads import Payloads

#: Memory a buffered payload costs beyond its length: its end offset (8 bytes) and the share of the
#: bytearray's growth reserve of a ~400-byte message (CPython over-allocates by 1/8).
PAYLOAD_OVERHEAD_BYTES = 56
#: Memory an encode needs beyond the payloads, as a share of their bytes (JSON→Arrow columns, the
#: sort, Parquet pages): ~1.1x measured with jemalloc as Arrow's pool, charged with a margin.
ENCODE_WORKING_SET_RATIO = 1.5
#: Resident bytes the process may hold beyond what the cap counts: the target's 150 MB less room for
#: the transients between two readings (an encode, a table commit: BENCHMARKS.md).
FOOTPRINT_BYTES = 100 * 1024**2
#: How often the resident size is read (due() runs every tick and, at the cap, once a message).
RESIDENT_INTERVAL_S = 0.25
#: Share of the cap the holds and the excess charge may take together: the buffers keep the rest.
MAX_HELD_SHARE = 0.75


class PartitionBuffer(Payloads):
    """Raw payloads of one (app, region) waiting to be encoded: a growing batch, and when it opened."""

    __slots__ = (
        "app",
        "app_segment",
        "bytes",
        "first_seq",
        "opened_ns",
        "opened_s",
        "region",
        "region_segment",
    )

    def __init__(self, app_segment: str, region_segment: str) -> None:
        super().__init__()
        self.app_segment = app_segment
        self.region_segment = region_segment
        # The decoded values are what the file's rows are compared against.
        self.app = decode_value(app_segment)
        self.region = decode_value(region_segment)
        self.bytes = 0
        self.opened_s = 0.0
        self.opened_ns = 0
        #: Spool sequence number of the oldest buffered payload.
        self.first_seq = 0


@dataclass(slots=True)
class FlushBatch:
    """Payloads detached from a partition, to be encoded and uploaded."""

    app: str
    region: str
    app_segment: str
    region_segment: str
    payloads: Payloads
    bytes: int
    #: Wall-clock time of the detach; malformed rows without a timestamp get it.
    detached_ns: int
    #: The batch is this partition's spooled records with first_seq <= seq < end_seq.
    first_seq: int = 0
    end_seq: int = 0
    #: Wall-clock time the oldest payload arrived.
    opened_ns: int = 0
    #: Object key per hour fixed by a journal intent (recovery); empty for a new batch.
    keys: dict[int, str] | None = None
    #: Memory charged against the cap for this batch (set when detached or tracked).
    memory_bytes: int = 0


def _charge(payload_bytes: int, payloads: int) -> int:
    """What a detached batch is charged until encoded: payloads, their overhead, the encode."""
    return payload_bytes + payloads * PAYLOAD_OVERHEAD_BYTES + int(payload_bytes * ENCODE_WORKING_SET_RATIO)


class Buffers:
    """All partition buffers of one process, with the byte accounting of the memory cap."""

    def __init__(
        self,
        flush_bytes: int,
        flush_interval_s: float,
        max_buffer_bytes: int,
        clock: Callable[[], float] = time.monotonic,
        wall_clock_ns: Callable[[], int] = time.time_ns,
        resident: Callable[[], int] | None = None,
        footprint_bytes: int = FOOTPRINT_BYTES,
    ) -> None:
        """``resident()``: the process's resident bytes now (None: the counts alone); see FOOTPRINT_BYTES."""
        self.flush_bytes, self.flush_interval_s = flush_bytes, flush_interval_s
        self.max_buffer_bytes = max_buffer_bytes
        self._clock, self._wall_clock_ns = clock, wall_clock_ns
        self.partitions: dict[tuple[str, str], PartitionBuffer] = {}
        #: Bytes in open buffers (appended, not yet detached).
        self.open_bytes = 0
        #: Bytes detached and not yet archived.
        self.inflight_bytes = 0
        #: Spool sequence after the last payload fed to a buffer (the end of any batch detached now).
        self.fed_seq = 0
        #: Memory charged by other stages (the compactor's merge), counted in ``inflight_bytes`` too.
        self.held_bytes = 0
        self.excess_bytes = 0  #: resident bytes beyond the counts and footprint_bytes, a hold (in held_bytes)
        self.footprint_bytes, self.max_held_bytes = footprint_bytes, int(max_buffer_bytes * MAX_HELD_SHARE)
        self._resident, self._resident_at = resident, float("-inf")

    def partition(self, app: str | None, region: str | None) -> PartitionBuffer:
        """The buffer of (app, region), created on first use; values are encoded for the key."""
        key = (partition_value(app), partition_value(region))
        buf = self.partitions.get(key)
        if buf is None:
            buf = self.partitions[key] = PartitionBuffer(*key)
        return buf

    def append(self, buf: PartitionBuffer, payload: bytes, seq: int = 0) -> bool:
        """Add one payload (spool sequence ``seq``); True when a flush is now needed."""
        if not buf.ends:
            buf.opened_s = self._clock()
            buf.opened_ns = self._wall_clock_ns()
            buf.first_seq = seq
        self.fed_seq = seq + 1
        buf.append(payload)
        size = len(payload)
        # Sums kept in locals: no attribute is read twice (this runs once per message).
        buffered = buf.bytes = buf.bytes + size
        held = self.open_bytes = self.open_bytes + size + PAYLOAD_OVERHEAD_BYTES
        return buffered >= self.flush_bytes or held + self.inflight_bytes >= self.max_buffer_bytes

    def detach(self, buf: PartitionBuffer) -> FlushBatch | None:
        """Take the partition's payloads out as a batch (None when empty)."""
        if not buf.ends:
            return None
        memory = _charge(buf.bytes, len(buf.ends))
        self.open_bytes -= buf.bytes + len(buf.ends) * PAYLOAD_OVERHEAD_BYTES
        self.inflight_bytes += memory
        batch = FlushBatch(
            buf.app, buf.region, buf.app_segment, buf.region_segment, buf.take(), buf.bytes,
            self._wall_clock_ns(), buf.first_seq, self.fed_seq, buf.opened_ns, memory_bytes=memory,
        )  # fmt: skip
        buf.bytes = 0
        return batch

    def due(self) -> list[FlushBatch]:
        """Detach every partition over its size threshold or age, then enforce the memory cap."""
        now = self._clock()
        self.measure(now)
        batches = []
        for buf in self.partitions.values():
            if buf.ends and (buf.bytes >= self.flush_bytes or now - buf.opened_s >= self.flush_interval_s):
                batch = self.detach(buf)
                if batch is not None:
                    batches.append(batch)
        if self.open_bytes + self.inflight_bytes >= self.max_buffer_bytes:
            # Largest first: the fewest, biggest files free the most memory; down to half what the holds leave.
            target = (self.max_buffer_bytes - min(self.held_bytes, self.max_held_bytes)) // 2
            for buf in sorted(self.partitions.values(), key=lambda b: b.bytes, reverse=True):
                if self.open_bytes <= target or not buf.ends:
                    break
                batch = self.detach(buf)
                if batch is not None:
                    batches.append(batch)
        return batches

    def detach_all(self) -> list[FlushBatch]:
        """Detach every non-empty partition (shutdown)."""
        return [b for b in (self.detach(buf) for buf in self.partitions.values()) if b is not None]

    def track(self, batch: FlushBatch) -> None:
        """Count a batch that did not come from a buffer (recovered from the spool) as in flight."""
        batch.memory_bytes = _charge(batch.bytes, len(batch.payloads))
        self.inflight_bytes += batch.memory_bytes

    def low_water_seq(self, default: int) -> int:
        """Oldest spool sequence an open buffer still needs (``default`` when none)."""
        return min([default, *(b.first_seq for b in self.partitions.values() if b.ends)])

    def oldest_open_ns(self) -> int | None:
        """Arrival time of the oldest buffered payload."""
        return min((b.opened_ns for b in self.partitions.values() if b.ends), default=None)

    def charge(self, batch: FlushBatch, memory_bytes: int) -> None:
        """Change what ``batch`` is charged against the cap (encode working set, then encoded size)."""
        self.inflight_bytes += memory_bytes - batch.memory_bytes
        batch.memory_bytes = memory_bytes
        self.measure()

    def settle(self, batch: FlushBatch) -> None:
        """Forget a batch's bytes once it is archived."""
        self.inflight_bytes -= batch.memory_bytes
        batch.memory_bytes = 0
        self.measure()

    def hold(self, memory_bytes: int) -> None:
        """Charge memory another stage uses (negative: release it) against the cap, so ingest flushes earlier."""
        # In flight (the hot path's check and due() see it for free), at most MAX_HELD_SHARE of the cap.
        counted = min(self.held_bytes, self.max_held_bytes)
        self.held_bytes += memory_bytes
        self.inflight_bytes += min(self.held_bytes, self.max_held_bytes) - counted

    def measure(self, now: float | None = None) -> None:
        """Charge the resident bytes the counts miss (at most every RESIDENT_INTERVAL_S; see the module docstring)."""
        now = self._clock() if now is None else now
        if self._resident is None or now - self._resident_at < RESIDENT_INTERVAL_S:
            return
        self._resident_at = now
        others = self.held_bytes - self.excess_bytes
        counted = self.buffered_bytes + others
        room = max(0, self.max_held_bytes - others)
        excess = min(room, max(0, self._resident() - counted - self.footprint_bytes))
        self.hold(excess - self.excess_bytes)
        self.excess_bytes = excess

    def has_room(self) -> bool:
        """False while the bytes held reach the memory cap."""
        return self.open_bytes + self.inflight_bytes < self.max_buffer_bytes

    @property
    def buffered_bytes(self) -> int:
        """Memory held by messages received and not yet archived (payloads, overhead, encoding)."""
        return self.open_bytes + self.inflight_bytes - min(self.held_bytes, self.max_held_bytes)

    def next_deadline_s(self) -> float | None:
        """Monotonic time at which the oldest open partition becomes due, if any."""
        opened = [b.opened_s for b in self.partitions.values() if b.ends]
        return min(opened) + self.flush_interval_s if opened else None


class Room:
    """Back-pressure as a signal: who finds the buffers full waits; whoever frees memory wakes them.

    The hot path (without a spool) and the spool replay wait; the uploader calls
    :meth:`freed` once a batch is encoded or archived. Only the memory cap decides:
    :meth:`Buffers.has_room`.
    """

    __slots__ = ("_buffers", "_event")

    def __init__(self, buffers: Buffers) -> None:
        self._buffers = buffers
        self._event = asyncio.Event()
        self._event.set()

    async def wait(self) -> None:
        """Until memory is freed (called when the buffers have no room)."""
        self._event.clear()
        await self._event.wait()

    def freed(self) -> None:
        """Memory was released: wake the waiters if there is room now."""
        if self._buffers.has_room():
            self._event.set()
