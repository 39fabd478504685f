"""The spool on its own: group commit, torn tails, trimming, journal compaction, locking."""

from __future__ import annotations

from pathlib import Path

import pytest

from archiver.errors import SpoolError
from archiver.service.spool import Intent, Spool
from archiver.service.spool_record import subject_prefix

PREFIX = subject_prefix(b"logs.app.dfw.0123456789abcd")


def fill(spool: Spool, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        assert spool.append(*PREFIX, b'{"message":"m%d"}' % i)


def test_append_counts_only_after_write_and_reads_back(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=10**9, segment_bytes=2000)
    spool.open()
    fill(spool, 100)
    assert spool.pending_records == 100 and spool.read(0, 100, 1000) == []
    assert spool.write_pending() == 100
    records = spool.read(0, 100, 1000)
    assert [seq for seq, _, _ in records] == list(range(100))
    assert records[42][1:] == (b"logs.app.dfw.0123456789abcd", b'{"message":"m42"}')
    assert [s for s, _, _ in spool.read(10, 20, 5)] == [10, 11, 12, 13, 14]
    spool.close()


def test_reopen_continues_sequence_and_ignores_torn_tail(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=10**9)
    spool.open()
    fill(spool, 10)
    spool.write_pending()
    spool.close()
    segment = max(tmp_path.glob("*.seg"), key=lambda p: p.stat().st_size)
    data = segment.read_bytes()
    segment.write_bytes(data[:-5])  # a write torn by an OS crash
    again = Spool(str(tmp_path), max_bytes=10**9)
    again.open()
    assert again.next_seq == 9
    assert [s for s, _, _ in again.read(0, 100, 100)] == list(range(9))
    fill(again, 1, start=100)
    again.write_pending()
    assert again.read(9, 10, 10)[0][2] == b'{"message":"m100"}'
    again.close()


def test_corrupt_record_ends_replay_of_that_segment(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=10**9)
    spool.open()
    fill(spool, 5)
    spool.write_pending()
    spool.close()
    segment = max(tmp_path.glob("*.seg"), key=lambda p: p.stat().st_size)
    data = bytearray(segment.read_bytes())
    data[len(data) // 2] ^= 0xFF
    segment.write_bytes(bytes(data))
    again = Spool(str(tmp_path), max_bytes=10**9)
    again.open()
    assert 0 < again.next_seq < 5
    again.close()


def test_full_spool_refuses_and_trim_frees(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=3000, segment_bytes=1000)
    spool.open()
    accepted = 0
    for _ in range(200):
        if spool.append(*PREFIX, b"x" * 50):
            accepted += 1
        spool.write_pending()
    assert 0 < accepted < 200 and spool.bytes <= 3000
    assert spool.trim(spool.next_seq) > 0
    assert spool.append(*PREFIX, b"x" * 50)
    spool.close()


def test_journal_keeps_done_entries_of_retained_segments(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path), max_bytes=10**9, segment_bytes=500)
    spool.open()
    fill(spool, 30)
    spool.write_pending()
    fill(spool, 30, start=30)
    spool.write_pending()
    old = Intent("app", "dfw", 0, 10, {0: "k0"}, 1)
    kept = Intent("app", "dfw", 40, 50, {0: "k1"}, 2)
    still_open = Intent("app", "dfw", 50, 60, {0: "k2"}, 3)
    for intent in (old, kept, still_open):
        spool.write_intent(intent)
    spool.write_done(old)
    spool.write_done(kept)
    assert spool.trim(30) > 0  # the first segment goes, and the journal is compacted
    spool.close()
    again = Spool(str(tmp_path), max_bytes=10**9)
    journal = again.open()
    assert journal.covers("app", "dfw", 45)  # done, in a retained segment: never replayed twice
    assert not journal.covers("app", "dfw", 5)
    assert journal.open == {still_open.batch_id: still_open}
    again.close()


def test_one_process_per_spool(tmp_path: Path) -> None:
    first = Spool(str(tmp_path), max_bytes=10**9)
    first.open()
    with pytest.raises(SpoolError, match="in use by another archiver"):
        Spool(str(tmp_path), max_bytes=10**9).open()
    first.close()
    second = Spool(str(tmp_path), max_bytes=10**9)
    second.open()
    second.close()
