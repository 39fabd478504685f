"""Recovery after a restart, in process: an interrupted batch re-sent under its keys; a JetStream spool; old spools.

Each test runs a first "process" that stops abruptly (its uploads cancelled
mid-way, the spool left as a kill would leave it, only closed), then a second
one over the same spool directory and archive: :func:`archiver.service.recovery.recover`,
the re-sent batches, the replay of the rest.
"""

from __future__ import annotations

import asyncio
import base64
import io
import tarfile
from collections import Counter
from pathlib import Path

import orjson
from harness import unique_messages
from stages import Stages, archived_messages, build, expected, feed, journal_entries, message

from archiver.service.jetstream_acks import AckTracker
from archiver.service.journal import JOURNAL_NAME, Intent, Journal
from archiver.service.recovery import recover
from archiver.service.spool_record import jetstream_tag, record_subject, subject_prefix, tagged_prefix
from archiver.storage.local import LocalStorage

MESSAGES = unique_messages(12, 400)  # 6 partitions, each with event times in two hours


def partition_of(subject: str) -> tuple[str, str]:
    _, app, region, _ = subject.split(".")
    return app, region


FIRST = partition_of(MESSAGES[0][0])
ONE_PARTITION = [m for m in MESSAGES if partition_of(m[0]) == FIRST]
OTHERS = [m for m in MESSAGES if partition_of(m[0]) != FIRST]


class DyingStorage(LocalStorage):
    """A local archive whose puts after the first ``allowed`` never return: the process dies mid-upload."""

    def __init__(self, root: Path, allowed: int) -> None:
        super().__init__(str(root))
        self.allowed = allowed
        self.stalled = asyncio.Event()

    async def put(self, key: str, data: bytes) -> None:
        """Store, or hang once the allowance is used up."""
        if self.allowed == 0:
            self.stalled.set()
            await asyncio.Event().wait()  # until cancelled
        self.allowed -= 1
        await super().put(key, data)


def intent_keys(spool_dir: Path) -> list[dict[int, str]]:
    entries = [orjson.loads(line) for line in (spool_dir / JOURNAL_NAME).read_bytes().splitlines()]
    return [{int(h): k for h, k in e["k"].items()} for e in entries if e["t"] == "intent"]


async def replay_all(stages: Stages, journal: Journal, from_seq: int) -> None:
    """Run the ingest's replay from ``from_seq`` (skipping what ``journal`` covers) until caught up."""
    stages.ingest.start_spill(from_seq, journal)
    task = asyncio.create_task(stages.ingest.replay())
    try:
        await asyncio.wait_for(stages.ingest.wait_caught_up(), 30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_interrupted_batch_is_resent_under_the_same_keys(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    # First process: one partition's batch (two hour files) journaled, its first file uploaded, then death;
    # the other partitions' messages were only buffered.
    dying = DyingStorage(archive, allowed=1)
    first = build(spool_dir, archive, storage=dying)
    first.spool.open()
    first.uploader.start()
    await feed(first, ONE_PARTITION)
    (batch,) = first.buffers.detach_all()
    first.uploader.submit(batch)
    await feed(first, OTHERS)
    await asyncio.wait_for(dying.stalled.wait(), 30)
    await first.close()
    assert journal_entries(spool_dir) == ["intent"]
    (keys,) = intent_keys(spool_dir)
    assert len(keys) == 2
    uploaded = [info.key for info in await LocalStorage(str(archive)).list("")]
    assert len(uploaded) == 1 and uploaded[0] in keys.values()

    # Second process: the batch comes back whole, with its range and keys; only the rest is replayed.
    second = build(spool_dir, archive)
    recovered = recover(second.spool, second.buffers, None)
    (resent,) = recovered.batches
    assert (resent.first_seq, resent.end_seq, resent.keys) == (batch.first_seq, batch.end_seq, keys)
    assert list(resent.payloads) == [payload for _, payload in ONE_PARTITION]
    assert resent.detached_ns == batch.detached_ns  # malformed rows get the same timestamp as before
    assert recovered.replay_from_seq == 0
    second.uploader.start()
    try:
        second.uploader.submit(resent)
        await replay_all(second, recovered.journal, recovered.replay_from_seq)
        replayed = second.buffers.detach_all()
        assert Counter(p for b in replayed for p in b.payloads) == Counter(p for _, p in OTHERS)
        for b in replayed:
            second.uploader.submit(b)
        await asyncio.wait_for(second.uploader.join(), 60)
        assert await archived_messages(archive) == expected(MESSAGES)  # each row once
        files = {info.key for info in await second.storage.list("")}
        assert set(keys.values()) <= files  # the interrupted batch's files under the keys it had
        assert second.stats.upload_errors == 0
        # No second intent for the re-sent batch (its keys were fixed), a done for every batch.
        assert Counter(journal_entries(spool_dir)) == {"intent": 1 + len(replayed), "done": 1 + len(replayed)}
    finally:
        await second.close()


async def test_jetstream_spool_recovers_its_acks_and_recognises_redeliveries(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    tracker = AckTracker()
    first = build(spool_dir, archive, on_archived=tracker.archived)
    first.spool.open()
    first.uploader.start()
    replies: dict[int, str] = {}
    for stream_seq, (subject, payload) in enumerate(MESSAGES, start=1000):
        replies[stream_seq] = f"$JS.ACK.LOGS.archiver.1.{stream_seq}.{stream_seq}.0.0"
        spooled = first.ingest.on_tagged(message(subject, payload), stream_seq, replies[stream_seq])
        assert spooled is not None
        tracker.add(spooled[0], stream_seq, replies[stream_seq], spooled[1])
    first.ingest.commit()
    # The first partition is archived (and acked); the others were still buffered at the crash.
    batch = first.buffers.detach(first.buffers.partition(*FIRST))
    assert batch is not None
    first.uploader.submit(batch)
    await asyncio.wait_for(first.uploader.join(), 60)
    acked_first = set(tracker.take_acks())
    archived_seqs = {seq for seq, (s, _) in enumerate(MESSAGES, start=1000) if partition_of(s) == FIRST}
    assert acked_first == {replies[seq] for seq in archived_seqs}
    await first.close()

    second_tracker = AckTracker()
    second = build(spool_dir, archive, on_archived=second_tracker.archived)
    recovered = recover(second.spool, second.buffers, second_tracker)
    assert recovered.batches == [] and len(second_tracker) == len(MESSAGES)
    # Archived records are acked again at once (the first acks may not have reached the server).
    assert set(second_tracker.take_acks()) == acked_first
    some_archived = min(archived_seqs)
    pending = min(set(replies) - archived_seqs)
    assert second_tracker.redelivered(some_archived, "again.1") and second_tracker.take_acks() == ["again.1"]
    assert second_tracker.redelivered(pending, "again.2") and second_tracker.take_acks() == []
    assert not second_tracker.redelivered(99_999, "never.spooled")
    second.uploader.start()
    try:
        await replay_all(second, recovered.journal, recovered.replay_from_seq or 0)
        replayed = second.buffers.detach_all()
        assert Counter(p for b in replayed for p in b.payloads) == Counter(p for _, p in OTHERS)
        for b in replayed:
            second.uploader.submit(b)
        await asyncio.wait_for(second.uploader.join(), 60)
        # The rest is acked once archived, the redelivered one with its latest ack subject.
        expected_acks = {replies[seq] for seq in set(replies) - archived_seqs - {pending}} | {"again.2"}
        assert set(second_tracker.take_acks()) == expected_acks
        assert await archived_messages(archive) == expected(MESSAGES)
    finally:
        await second.close()


#: A spool written by the code before issue 12 moved the record format and recovery (seg files + journal):
#: records 0-1 logs.app-a.ams.i1, 2-3 logs.app-b.ams.i2, 4 subject "other" (the payload names app-b),
#: 5-7 JetStream-tagged (stream seqs 101 app-a, 102 app-b, 103 app-a); journal: app-a [0, 6) done,
#: app-b [2, 7) an open intent (key "app=app-b/k2.parquet", detached at 22).
OLD_SPOOL = (
    "H4sIAG+7DGsC/+2WP2vbQBiHD0qhZCn9BuGlFELky93pHzF0KKUEmkKGZOp2bi6OaktyJblQjDKGfoNM2dJC94xZO/cTZOnSz9Ct"
    "d3Ia7CjoAnY1NO+DXoRPd/c+6OAnM1aH5qpPlojZM2CMXG1/886FEGSmPWGceZyTVUZaYJwXMtPtyf3kSFd6dn7yhAzTfk7laNSR"
    "VMY5jfgEDoafoDsBPWhuiYwVdKGaAqUDmepHaWJG4tz8jlWey76ZEjNwoIj0QCFjvRYEE16H+R3G9zjrMnPR6/N+C6Wx+P5tJVyu"
    "Bbda8JrF4/2tcsaiN7UQDRY9i4WwWoiaxZfo9+VyLVyrhTtnkWmL01dr6w9JWhyqbIHOnrWzN9eZIC1yS/z7bee//gLU89/F/G+D"
    "r7p+rf4436wnL9EHQ56+3qUvXm7TNztbu1Rm7w6jjyqjnOpnVekcXyChfWs2+HPZYGyPLx793Kxno7YVDbaiqmZbW5IFVtugZvvs"
    "8/DB7e/WbbB1q1rs3YZW2xBz997zPh1niRz+829MQ/4zj/nz+c9C18X//60wgUJnQ5QUKil0YMjrcNHZchUrDhxAlzmgUyVwQIcN"
    "5w4MTBrxkHu+HwYzhzdd/7zaY2PA6UhmH8aqgLJcmbbaTxN1h0Z/p9fMejcXiGpBWJkJcSez3sZAzJphDCAIgiAIgiAIgiAIgiAI"
    "giAI8h/xB8ndz5sAKAAA"
)


async def test_a_spool_written_before_the_move_still_recovers(tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    with tarfile.open(fileobj=io.BytesIO(base64.b64decode(OLD_SPOOL)), mode="r:gz") as tar:
        tar.extractall(spool_dir, filter="data")
    stages = build(spool_dir, tmp_path / "archive")
    tracker = AckTracker()
    recovered = recover(stages.spool, stages.buffers, tracker)
    try:
        records = stages.spool.read(0, 100, 100)
        assert [seq for seq, _, _ in records] == list(range(8))
        assert [record_subject(f) for _, f, _ in records][3:6] == [
            b"logs.app-b.ams.i2",
            b"other",
            b"logs.app-a.ams.i1",
        ]
        assert [jetstream_tag(f) for _, f, _ in records][4:6] == [
            None,
            (101, "$JS.ACK.LOGS.archiver.1.101.101.0.0"),
        ]
        # Built today, a record's subject field is byte for byte what the old code wrote.
        prefix, _ = tagged_prefix(b"logs.app-a.ams.i1", 101, "$JS.ACK.LOGS.archiver.1.101.101.0.0")
        assert prefix == subject_prefix(records[5][1])[0] and prefix[2:] == records[5][1]
        (resent,) = recovered.batches
        assert (resent.app, resent.region, resent.first_seq, resent.end_seq) == ("app-b", "ams", 2, 7)
        assert resent.keys == {1714557600000000000: "app=app-b/k2.parquet"} and resent.detached_ns == 22
        assert [orjson.loads(p)["message"] for p in resent.payloads] == ["m2", "m3", "m4", "m6"]
        assert len(tracker) == 3 and tracker.take_acks() == ["$JS.ACK.LOGS.archiver.1.101.101.0.0"]
        await replay_all(stages, recovered.journal, recovered.replay_from_seq or 0)
        (replayed,) = stages.buffers.detach_all()  # only record 7: the journal covers every other one
        assert (replayed.app, [orjson.loads(p)["message"] for p in replayed.payloads]) == ("app-a", ["m7"])
    finally:
        await stages.close()


def test_the_journal_is_the_one_rule_and_sees_overlapping_done_ranges() -> None:
    # A batch replayed after a crash may span an older done range of its partition: [5, 26) over [10, 20).
    journal = Journal(
        open={("a", "r", 30): Intent("a", "r", 30, 40)},
        done={("a", "r"): [(5, 26), (10, 20)], ("b", "r"): [(0, 3)]},
    )
    assert journal.archived("a", "r", 22) and journal.covers("a", "r", 22)
    assert not journal.archived("a", "r", 26) and not journal.covers("a", "r", 26)
    assert journal.open_intent("a", "r", 35) == Intent("a", "r", 30, 40) and journal.covers("a", "r", 35)
    assert not journal.archived("a", "r", 35) and journal.open_intent("b", "r", 35) is None
    assert (
        journal.archived("b", "r", 2) and not journal.covers("b", "r", 3) and not journal.covers("c", "r", 1)
    )
