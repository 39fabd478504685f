"""JetStream mode's bookkeeping: which stream sequences the spool holds, and when to ack them.

Pure (no I/O); driven by :class:`archiver.service.jetstream.JetStreamSource`, whose docstring
explains the design, and rebuilt after a restart by :mod:`archiver.service.recovery`.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable

from archiver.service.buffer import FlushBatch

Partition = tuple[str, str]


class AckTracker:
    """Tagged records still in the spool: which stream sequences they hold and when to ack them."""

    def __init__(self) -> None:
        self._spool_seq: dict[int, int] = {}  # stream seq -> spool seq, every indexed record
        self._replies: dict[int, str] = {}  # spool seq -> ack subject, records not archived yet
        self._unarchived: dict[Partition, list[int]] = {}  # spool seqs not archived yet, ascending
        self._order: deque[tuple[int, int]] = deque()  # (spool seq, stream seq), spool order
        self._to_ack: list[str] = []
        self._floors: deque[tuple[int, float]] = deque()  # (ack floor, monotonic time it was seen)
        #: Called when there is something to ack (set by the source).
        self.wake: Callable[[], None] = lambda: None

    def add(
        self, spool_seq: int, stream_seq: int, reply: str, partition: Partition, archived: bool = False
    ) -> None:
        """Index a spooled record (in spool order); an ``archived`` one is acked at once."""
        self._spool_seq[stream_seq] = spool_seq
        self._order.append((spool_seq, stream_seq))
        if archived:
            self._to_ack.append(reply)
            self.wake()
        else:
            self._replies[spool_seq] = reply
            self._unarchived.setdefault(partition, []).append(spool_seq)

    def redelivered(self, stream_seq: int, reply: str) -> bool:
        """True when ``stream_seq`` is already spooled: ack it now if archived, else on archiving."""
        spool_seq = self._spool_seq.get(stream_seq)
        if spool_seq is None:
            return False
        if spool_seq in self._replies:
            self._replies[spool_seq] = reply
        else:
            self._to_ack.append(reply)
            self.wake()
        return True

    def archived(self, batch: FlushBatch) -> None:
        """The uploader's hook: the batch's records are archived; queue their acks."""
        seqs = self._unarchived.get((batch.app_segment, batch.region_segment))
        if not seqs:
            return
        # A batch holds its partition's records in [first_seq, end_seq) not archived before it. After
        # a crash it may also span an open intent's records: acked early, but safe, as that intent
        # is journaled and its records stay spooled until it is done.
        lo = bisect.bisect_left(seqs, batch.first_seq)
        hi = bisect.bisect_left(seqs, batch.end_seq)
        if lo == hi:
            return
        replies = self._replies
        self._to_ack.extend(replies.pop(seq) for seq in seqs[lo:hi])
        del seqs[lo:hi]
        self.wake()

    def take_acks(self) -> list[str]:
        """The ack subjects to publish now."""
        out, self._to_ack = self._to_ack, []
        return out

    def requeue(self, replies: list[str]) -> None:
        """Ack subjects that could not be published: try again later."""
        self._to_ack[:0] = replies

    def observe_floor(self, ack_floor: int, now: float) -> None:
        """The consumer's ack floor as polled; applied by :meth:`settle` once no copy can be in flight."""
        self._floors.append((ack_floor, now))

    def settle(self, seen_before: float) -> None:
        """Apply the floors polled by ``seen_before``; called once every delivery received is handled.

        The server may redeliver a message just before it takes our ack of it; forgetting the
        record as soon as the floor passes it would let that copy in as a new message.
        """
        floor = -1
        while self._floors and self._floors[0][1] <= seen_before:
            floor = max(floor, self._floors.popleft()[0])
        if floor >= 0:
            self.confirm(floor)

    def confirm(self, ack_floor: int) -> None:
        """The server holds every ack up to stream sequence ``ack_floor``: forget those records."""
        order = self._order
        while order and order[0][1] <= ack_floor and order[0][0] not in self._replies:
            spool_seq, stream_seq = order.popleft()
            if self._spool_seq.get(stream_seq) == spool_seq:
                del self._spool_seq[stream_seq]

    def low_water_seq(self, default: int) -> int:
        """Oldest spool sequence still indexed: the spool must keep it to recognise redeliveries."""
        return min(default, self._order[0][0]) if self._order else default

    def __len__(self) -> int:
        """Records indexed."""
        return len(self._order)
