"""A batch's buffer as Arrow binary arrays over it, without a copy (the envelope slicer's input).

A :class:`~archiver.codec.payloads.Payloads` buffer holds each payload
followed by a newline; :class:`Lines` wraps it (``pa.py_buffer``, an export
of the bytearray, which therefore cannot grow while the arrays live: a
batch is frozen once detached) with int32 line offsets, and any monotonic
cut points of it become a binary array sharing the buffer (:func:`pieces`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

_INT32 = pa.int32()
_ZERO = pa.array([0], _INT32)
_ONE = pa.scalar(1, _INT32)


class Lines:
    """Lines in one buffer (each payload and its newline) and where each line starts and ends."""

    __slots__ = ("ascii", "buffer", "ends", "n", "raw", "starts", "total")

    def __init__(self, raw: bytearray, ends: pa.Array, starts: pa.Array | None = None,
                 buffer: pa.Buffer | None = None, ascii: bool = False) -> None:  # fmt: skip
        self.raw = raw
        self.buffer = pa.py_buffer(raw) if buffer is None else buffer
        self.n = n = len(ends)
        self.ends = ends  # int32, into the whole buffer: line i is raw[starts[i]:ends[i]], newline included
        self.starts = pa.concat_arrays([_ZERO, ends.slice(0, n - 1)]) if starts is None else starts
        self.ascii = ascii
        self.total = ends[n - 1].as_py()

    def rows(self, lo: int, hi: int) -> Lines:
        """Lines lo..hi, over the same buffer."""
        if lo == 0 and hi == self.n:
            return self
        return Lines(self.raw, self.ends.slice(lo, hi - lo), self.starts.slice(lo, hi - lo), self.buffer,
                     self.ascii)  # fmt: skip

    def binary(self, offsets: pa.Array) -> pa.Array:
        """A binary array over the buffer, no copy, with these int32 offsets (monotonic)."""
        return pa.Array.from_buffers(pa.binary(), len(offsets) - 1, [None, offsets.buffers()[1], self.buffer],
                                     offset=offsets.offset)  # fmt: skip


_IOTA: list[pa.Array] = [pa.array([], _INT32)]


def iota(size: int) -> pa.Array:
    """0, 1, ... size - 1 (int32), a slice of a cached array."""
    if len(_IOTA[0]) < size:
        _IOTA[0] = pa.array(range(max(size, 2 * len(_IOTA[0]), 1024)), _INT32)
    return _IOTA[0].slice(0, size)


def pieces(laid: Lines, first: pa.Array, second: pa.Array, last: int) -> pa.Array:
    """Over the buffer, no copy: [first[0], second[0]), [second[0], first[1]), ..., [second[n-1], last)."""
    n = len(first)
    k = iota(2 * n)
    odd = pc.bit_wise_and(k, _ONE)
    offsets = pa.concat_arrays([first, second]).take(
        pc.add(pc.multiply(odd, pa.scalar(n, _INT32)), pc.shift_right(k, _ONE))
    )
    return laid.binary(pa.concat_arrays([offsets, pa.array([last], _INT32)]))
