"""Buffers as pure code with an injectable clock: flush on size and age, the memory cap, back-pressure, payloads."""

from __future__ import annotations

from archiver.codec.payloads import Payloads
from archiver.service.buffer import ENCODE_WORKING_SET_RATIO, PAYLOAD_OVERHEAD_BYTES, Buffers


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_flush_on_size_and_age_and_nothing_when_empty() -> None:
    clock = FakeClock()
    buffers = Buffers(flush_bytes=100, flush_interval_s=60, max_buffer_bytes=1000, clock=clock)
    a = buffers.partition("a", "dfw")
    b = buffers.partition("b", "dfw")
    assert buffers.partition("a", "dfw") is a
    assert not buffers.append(a, b"x" * 60)
    assert buffers.append(a, b"x" * 40)  # reached flush_bytes
    buffers.append(b, b"y" * 10)
    batches = buffers.due()
    assert [(x.app, x.bytes) for x in batches] == [("a", 100)]
    assert buffers.due() == []
    clock.now += 59
    assert buffers.due() == []
    clock.now += 1
    assert [(x.app, len(x.payloads)) for x in buffers.due()] == [("b", 1)]
    clock.now += 3600
    assert buffers.due() == []  # nothing new, nothing written
    encode = ENCODE_WORKING_SET_RATIO
    # Memory, not only payload bytes: overheads and the encode working set are reserved.
    assert buffers.inflight_bytes == 110 + 3 * PAYLOAD_OVERHEAD_BYTES + int(100 * encode) + int(10 * encode)
    for batch in batches:
        buffers.settle(batch)
    assert buffers.inflight_bytes == 10 + PAYLOAD_OVERHEAD_BYTES + int(10 * encode)


def test_memory_cap_flushes_largest_first_and_backpressure() -> None:
    o = PAYLOAD_OVERHEAD_BYTES  # every payload is charged its length plus this
    cap = 1000 + 4 * o
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=cap, clock=FakeClock())
    small = buffers.partition("small", "r")
    big = buffers.partition("big", "r")
    buffers.append(small, b"s" * 200)
    buffers.append(big, b"b" * 700)
    assert not buffers.append(big, b"b" * 99)
    assert buffers.append(small, b"s")  # 1000 bytes + 4 overheads >= cap
    batches = buffers.due()
    assert [x.app for x in batches] == ["big"]  # largest first, until open <= cap / 2
    assert buffers.open_bytes == 201 + 2 * o
    assert not buffers.has_room()  # still all held: the callback waits for the upload
    assert buffers.inflight_bytes == 799 + 2 * o + int(799 * ENCODE_WORKING_SET_RATIO)  # encode reserved
    buffers.charge(batches[0], 50)  # encoded: now only its file is held
    assert buffers.has_room() and buffers.buffered_bytes == 251 + 2 * o
    buffers.settle(batches[0])
    assert buffers.has_room()
    buffers.append(small, b"s" * (cap - 201 - 2 * o))
    more = buffers.due()
    assert [x.app for x in more] == ["small"]
    assert not buffers.has_room()
    buffers.settle(more[0])
    assert buffers.has_room() and buffers.buffered_bytes == 0


def test_memory_another_stage_holds_makes_ingest_flush_earlier() -> None:
    """The compactor's merge charged against the cap: the largest partition flushes sooner, no room meanwhile."""
    o = PAYLOAD_OVERHEAD_BYTES
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=1000, clock=FakeClock())
    big = buffers.partition("big", "r")
    assert not buffers.append(big, b"b" * 300)
    buffers.hold(600)
    assert buffers.has_room() and buffers.buffered_bytes == 300 + o  # held memory is not "buffered"
    assert buffers.append(big, b"b" * 100)  # 400 + 2 overheads + 600 held >= the cap
    assert [x.app for x in buffers.due()] == ["big"] and not buffers.has_room()
    buffers.hold(-600)
    assert buffers.held_bytes == 0 and buffers.buffered_bytes == buffers.inflight_bytes
    assert buffers.buffered_bytes == 400 + 2 * o + int(400 * ENCODE_WORKING_SET_RATIO)


def test_payloads_store_back_to_back_and_read_back_exactly() -> None:
    payloads = Payloads([b"a", b"", b"bcd", b"{x}"])
    assert len(payloads) == 4 and payloads.nbytes == 7
    assert [payloads[0], payloads[1], payloads[2], payloads[-1]] == [b"a", b"", b"bcd", b"{x}"]
    assert payloads[1:3] == [b"", b"bcd"] and payloads[::2] == [b"a", b"bcd"] and payloads[5:9] == []
    payloads.append(b"z")
    assert list(payloads) == [b"a", b"", b"bcd", b"{x}", b"z"]
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=10**6, clock=FakeClock())
    part = buffers.partition("a", "r")
    for i in range(20_000):  # more than one slice of __iter__
        buffers.append(part, b"%d" % i, i)
    batch = buffers.detach(part)
    assert batch is not None and list(batch.payloads) == [b"%d" % i for i in range(20_000)]
    assert len(part.ends) == 0 and len(part.data) == 0  # the buffer starts afresh


def test_memory_resident_bytes_the_counts_miss_are_charged() -> None:
    """RSS beyond the counts and the footprint is held against the cap (re-read at most every 0.25 s)."""
    o = PAYLOAD_OVERHEAD_BYTES
    clock, resident = FakeClock(), [0]
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=1000, clock=clock,
                      resident=lambda: resident[0], footprint_bytes=100)  # fmt: skip
    big = buffers.partition("big", "r")
    buffers.append(big, b"b" * 300)
    resident[0] = 300 + o + 100 + 200  # 200 bytes the counts do not see
    assert buffers.due() == []
    assert buffers.excess_bytes == buffers.held_bytes == 200 and buffers.buffered_bytes == 300 + o
    assert buffers.has_room()
    resident[0] += 600
    assert buffers.due() == [] and buffers.excess_bytes == 200  # read again only after RESIDENT_INTERVAL_S
    clock.now += 1
    assert [x.app for x in buffers.due()] == ["big"]  # 300 + o + 750 >= the cap: flushed early
    assert buffers.excess_bytes == 750 and not buffers.has_room()  # at most 3/4 of the cap
    resident[0] = 0  # the memory went back (the batch's payloads are still counted in flight)
    clock.now += 1
    assert buffers.due() == [] and buffers.excess_bytes == 0 and buffers.held_bytes == 0
    resident[0] = 10**9  # with the other holds, never more than 3/4 of the cap: the buffers keep a quarter
    buffers.hold(500)
    clock.now += 1
    buffers.measure()
    assert buffers.excess_bytes == 250 and buffers.held_bytes == 750


def test_memory_pressure_detaches_down_to_half_of_what_holds_leave() -> None:
    """With the holds at half the cap, half of the other half stays open (a target of half the cap detached nothing)."""
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=1000, clock=FakeClock())
    parts = [buffers.partition(name, "r") for name in ("a", "b", "c")]
    buffers.hold(500)
    for part, size in zip(parts, (200, 150, 100), strict=True):
        buffers.append(part, b"x" * size)
    assert buffers.append(parts[2], b"x" * 60)  # 510 + 4 overheads + 500 held >= the cap
    assert [x.app for x in buffers.due()] == ["a", "c"]  # largest first, until open <= (1000 - 500) / 2
    assert buffers.open_bytes <= 250


def test_memory_holds_count_for_at_most_three_quarters_of_the_cap() -> None:
    """The other stages' charges never leave ingest less than a quarter of the cap."""
    buffers = Buffers(flush_bytes=10_000, flush_interval_s=60, max_buffer_bytes=1000, clock=FakeClock())
    part = buffers.partition("a", "r")
    buffers.hold(600)
    buffers.hold(300)  # 900 charged, 750 counted
    assert buffers.held_bytes == 900 and buffers.inflight_bytes == 750 and buffers.has_room()
    assert not buffers.append(part, b"x" * 100)
    assert buffers.append(part, b"x" * 100)  # 200 + 2 overheads + 750 >= the cap
    assert [x.app for x in buffers.due()] == ["a"]  # down to half of the quarter left
    buffers.hold(-600)
    assert buffers.held_bytes == 300 and buffers.inflight_bytes - buffers.buffered_bytes == 300
