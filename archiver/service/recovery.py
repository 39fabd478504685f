"""Recovery after a restart: one pass over the spool, against what the journal says.

The spool holds what was received, the journal what became of it (the
protocol: :mod:`archiver.service.spool`). :func:`recover` opens the spool and
reads its records once, in order, asking :class:`~archiver.service.journal.Journal`
(the one rule) about each:

* a record of an *open intent* (a batch journaled, perhaps partly uploaded)
  goes back into that batch, which is re-sent under the keys the intent
  fixed: a file already uploaded is refused, never doubled;
* in JetStream mode, a tagged record is indexed in the
  :class:`~archiver.service.jetstream_acks.AckTracker`, as archived when a
  done batch holds it (acked at once) and otherwise acked when its batch is,
  so a redelivery is recognised from the first fetch on.

The pass reads only what it needs: nothing without open intents or
JetStream, the intents' range, or the whole spool in JetStream mode. Every
other record the journal does not cover is buffered again by the ingest's
spill replay (:meth:`archiver.service.ingest.Ingest.replay`), from the oldest
record on disk, as memory allows: :attr:`Recovered.replay_from_seq`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

from archiver.archive.escaping import decode_value, partition_value
from archiver.codec.payloads import Payloads
from archiver.logs import event
from archiver.service.buffer import Buffers, FlushBatch
from archiver.service.jetstream_acks import AckTracker
from archiver.service.journal import Intent, Journal
from archiver.service.routing import app_region_of_record
from archiver.service.spool import Spool
from archiver.service.spool_record import jetstream_tag

READ_RECORDS = 50_000


@dataclass(slots=True)
class Recovered:
    """What the spool holds after a restart, for the pipeline to hand on."""

    journal: Journal
    #: The open intents' batches rebuilt from the spool, keys fixed, to re-send (already tracked).
    batches: list[FlushBatch]
    #: The oldest record on disk when some are to be replayed (those :meth:`Journal.covers` skips), else None.
    replay_from_seq: int | None


def recover(spool: Spool, buffers: Buffers, tracker: AckTracker | None) -> Recovered:
    """Open the spool; rebuild the open intents' batches and (JetStream) the tracker's index in one pass."""
    journal = spool.open()
    intents = sorted(journal.open.values(), key=lambda i: i.first_seq)
    lo, hi = 0, 0
    if tracker is not None:
        lo, hi = spool.first_seq, spool.written_seq
    elif intents:
        lo, hi = intents[0].first_seq, max(i.end_seq for i in intents)
    batches: dict[int, FlushBatch] = {}
    tagged = 0
    for seq, field, payload in _records(spool, lo, hi):
        app, region = app_region_of_record(field, payload)
        partition = (partition_value(app), partition_value(region))
        intent = journal.open_intent(*partition, seq) if intents else None
        if intent is not None:
            batch = batches.get(intent.first_seq)
            if batch is None:
                batch = batches[intent.first_seq] = _resent_batch(intent)
            batch.payloads.append(payload)
            batch.bytes += len(payload)
        tag = None if tracker is None else jetstream_tag(field)
        if tag is not None:
            assert tracker is not None
            tracker.add(seq, tag[0], tag[1], partition, journal.archived(*partition, seq))
            tagged += 1
    for batch in batches.values():
        buffers.track(batch)
    pending = spool.written_seq - spool.first_seq
    event(logging.INFO, "spool opened", dir=str(spool.directory), records=pending, bytes=spool.bytes,
          resent_batches=len(batches), jetstream_records=None if tracker is None else tagged)  # fmt: skip
    return Recovered(journal, list(batches.values()), spool.first_seq if pending else None)


def _records(spool: Spool, lo: int, hi: int) -> Iterator[tuple[int, bytes, bytes]]:
    """The spool's written records with lo <= seq < hi, in order: the one read loop of recovery."""
    seq = lo
    while seq < hi:
        records = spool.read(seq, hi, READ_RECORDS)
        if not records:
            return
        yield from records
        seq = records[-1][0] + 1


def _resent_batch(intent: Intent) -> FlushBatch:
    """An empty batch for an open intent: its partition, range, detach time and keys as journaled."""
    return FlushBatch(decode_value(intent.app_segment), decode_value(intent.region_segment), intent.app_segment,
                      intent.region_segment, Payloads(), 0, intent.received_ns, intent.first_seq, intent.end_seq,
                      0, intent.keys)  # fmt: skip
