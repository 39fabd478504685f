"""A batch's payloads in one buffer: what a partition holds and what the encoder reads.

The one batch type: a partition buffer gathers its payloads as one
(:class:`~archiver.service.buffer.PartitionBuffer`), the encoder reads one,
and a list of payloads (import, tests) becomes one with ``Payloads(list)``.

A Python ``bytes`` object per ~400-byte message cost ~90 bytes more, and
the small-object allocator kept the freed ones resident; one ``bytearray``
per partition holds the payloads back to back instead and goes back to the
OS whole. Each payload is followed by a newline, so a run of single-line
JSON objects is already the input of the bulk JSON reader (no copy).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import overload


class Payloads(Sequence[bytes]):
    """Payloads stored in one bytearray, each followed by a newline, with their end offsets.

    The newlines make a run of payloads that are JSON objects of one line each a ready-made
    input for the bulk JSON reader, without a copy (:meth:`json_lines`).
    """

    __slots__ = ("_ascii", "data", "ends")

    def __init__(self, payloads: Iterable[bytes] = (), *, data: bytearray | None = None,
                 ends: array[int] | None = None) -> None:  # fmt: skip
        """``payloads`` copied in (how a list becomes a batch), or the ``data``/``ends`` of a buffer adopted as is."""
        self.data = bytearray() if data is None else data
        self.ends = array("Q") if ends is None else ends
        self._ascii: tuple[int, bool] | None = None
        for payload in payloads:
            self.append(payload)

    @property
    def is_ascii(self) -> bool:
        """True when every payload is ASCII (scanned once for the payloads held now)."""
        # Keyed by the length, so appending needs not invalidate it: the hot path appends.
        size = len(self.data)
        if self._ascii is None or self._ascii[0] != size:
            self._ascii = (size, self.data.isascii())
        return self._ascii[1]

    def append(self, payload: bytes) -> None:
        """Add one payload at the end (the one place that lays payloads out)."""
        data = self.data
        data += payload
        self.ends.append(len(data))
        data += b"\n"

    def take(self) -> Payloads:
        """The payloads held, handed over without a copy; this one starts empty."""
        taken = Payloads(data=self.data, ends=self.ends)
        self.data = bytearray()
        self.ends = array("Q")
        self._ascii = None
        return taken

    def select(self, rows: Iterable[int]) -> Payloads:
        """The payloads at these positions, in this order, copied into a new batch."""
        out = Payloads()
        data, out_ends, ends = out.data, out.ends, self.ends
        view = memoryview(self.data)
        try:
            for i in rows:
                data += view[ends[i - 1] + 1 if i else 0 : ends[i]]
                out_ends.append(len(data))
                data += b"\n"
        finally:
            view.release()  # an export would stop the bytearray from growing
        return out

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def nbytes(self) -> int:
        """Total length of the payloads."""
        return len(self.data) - len(self.ends)

    def json_lines(self, lo: int, hi: int) -> memoryview | None:
        """Payloads ``lo:hi`` as newline-separated text, if each is one line starting with "{"."""
        ends, data = self.ends, self.data
        if hi <= lo:
            return None
        start = ends[lo - 1] + 1 if lo else 0
        stop = ends[hi - 1]
        if data.count(b"\n", start, stop) != hi - lo - 1:  # a payload holds a newline
            return None
        if data[start] != 123 or not all(data[end + 1] == 123 for end in ends[lo : hi - 1]):  # 123: "{"
            return None
        return memoryview(data)[start:stop]

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> list[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | list[bytes]:
        ends = self.ends
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(ends))
            if step != 1:
                return [self[i] for i in range(lo, hi, step)]
            view = memoryview(self.data)
            try:
                start = ends[lo - 1] + 1 if lo else 0
                out = []
                for end in ends[lo:hi]:
                    out.append(bytes(view[start:end]))
                    start = end + 1
                return out
            finally:
                view.release()  # an export would stop the bytearray from growing
        if index < 0:
            index += len(ends)
        start = ends[index - 1] + 1 if index else 0
        return bytes(self.data[start : ends[index]])

    def __iter__(self) -> Iterator[bytes]:
        for start in range(0, len(self.ends), 8192):  # in slices: never a copy of the whole batch at once
            yield from self[start : start + 8192]
