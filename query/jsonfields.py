"""One field of JSON messages, for many messages at once, with Arrow's JSON reader (never a row at a time).

The messages (already known to start with ``{`` and end with ``}``, see
:func:`object_candidates`) are joined by newlines and read by
``pyarrow.json.read_json`` as one block, with an explicit schema holding only
the path's objects and its leaf, every other field ignored. Arrow's reader
wants one kind per column (a number in one row and a string in the next is an
error), so the reader's error is used as a guide: "Column(/status) changed
from number to string in row 631" means rows before 631 read with the current
schema and the rest are read again with the leaf as a string. Any other
failure (a message that is not valid JSON, a key given twice, a number beyond
a double, a row count that does not match) splits the rows in halves until
the bad ones are found; those few, messages holding a raw line break, and
every row once a chunk has used up :data:`SPLIT_BUDGET`, are parsed one by
one with orjson, with the same result a successful bulk read would give.

What a row yields (:class:`Values`): ``number`` for a JSON number (as a
double), ``text`` for a string, a number's shortest text (``500``, ``1.5``)
or ``true``/``false``, ``present`` when the path holds a value other than
null (an object or array included), and ``valid`` when the message is a JSON
object at all.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa

from query import kernels as pc  # not pyarrow.compute: see query.kernels

#: Extra reads one chunk may spend on kind changes and bad rows before the rest goes row by row.
SPLIT_BUDGET = 48
#: At or below this many rows a failing piece is parsed row by row instead of split again.
ROW_PIECE = 8
_KIND_TYPES = {"number": pa.float64(), "string": pa.string(), "boolean": pa.bool_(), "object": pa.struct([])}
_KIND_CHANGE = re.compile(r"Column\((.*)\) changed from (\w+) to (\w+) in row (\d+)")
#: Rows the bulk reader is not given: a raw line break would let one message read as two rows.
_LINE_BREAKS = ("\\n", "\\r")
_FIELDS = ("number", "text", "present", "valid")


@dataclass(frozen=True, slots=True)
class Values:
    """One field of each message: its number, its text, whether it is there, whether the message is an object."""

    number: pa.Array
    text: pa.Array
    present: pa.Array
    valid: pa.Array


@dataclass(frozen=True, slots=True)
class _Shape:
    """What the reader is told the path holds: ``depth`` objects, then a value of ``kind``."""

    depth: int
    kind: str


def object_candidates(messages: Any) -> Any:
    """Which messages can be JSON objects: first non-blank ``{``, last ``}`` (a boolean array)."""
    # First and last byte by kernel (a regex over the whole text measured 10x slower); the rare
    # messages with blanks around go through the regex.
    first, last = pc.first_and_last_bytes(messages)
    opening, closing = (pa.scalar(b, first.type) for b in (b"{", b"}"))
    blanks = pa.array([b" ", b"\t", b"\n", b"\r"], first.type)
    plain = pc.and_kleene(pc.compare("equal", first, opening), pc.compare("equal", last, closing))
    padded = pc.or_kleene(pc.is_in(first, value_set=blanks), pc.is_in(last, value_set=blanks))
    if not pc.any(padded).as_py():
        return plain
    found = pc.match_substring_regex(pc.filter(messages, padded), r"\A[ \t\n\r]*\{(?s:.*)\}[ \t\n\r]*\z")
    return pc.replace_with_mask(plain, pc.fill_null(padded, pa.scalar(False, pa.bool_())), found)


def extract(messages: pa.Array | pa.ChunkedArray, path: Sequence[str]) -> Values:
    """The field at ``path`` of every message (messages that are not JSON objects give nothing)."""
    messages = messages.combine_chunks() if isinstance(messages, pa.ChunkedArray) else messages
    reader = _Reader(tuple(path))
    # Two literal searches: RE2 is much faster on one literal than on a character class.
    broken = pc.or_kleene(*(pc.match_substring_regex(messages, b) for b in _LINE_BREAKS))
    if not pc.any(broken).as_py():
        return _concat(reader.read(messages))
    # The few messages with a raw line break go row by row, the rest in bulk; then put back in place.
    whole = pc.invert(broken)
    bulk = _concat(reader.read(pc.filter(messages, whole)))
    rows = _rows(pc.filter(messages, broken).to_pylist(), reader.path)
    n = len(messages)
    return Values(
        *(
            pc.replace_with_mask(
                pc.replace_with_mask(pa.nulls(n, getattr(bulk, name).type), whole, getattr(bulk, name)),
                broken,
                getattr(rows, name),
            )
            for name in _FIELDS
        )
    )


def _concat(pieces: list[Values]) -> Values:
    if len(pieces) == 1:
        return pieces[0]
    if not pieces:
        return _rows([], ())
    return Values(*(pa.concat_arrays([getattr(p, name) for p in pieces]) for name in _FIELDS))


def _repeat(value: bool, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.bool_()), n)


class _Reader:
    """Reads one path of chunks of messages, learning the kinds the path holds as it goes."""

    def __init__(self, path: tuple[str, ...]) -> None:
        self.path = path
        self.shape = _Shape(len(path) - 1, "number")
        self.budget = SPLIT_BUDGET

    def read(self, messages: pa.Array) -> list[Values]:
        """The field of every message, in order, as pieces."""
        out: list[Values] = []
        self._read(messages, out)
        return out

    def _read(self, messages: pa.Array, out: list[Values]) -> None:
        n = len(messages)
        if n == 0:
            return
        if self.budget <= 0 or n <= ROW_PIECE:
            out.append(_rows(messages.to_pylist(), self.path))
            return
        self.budget -= 1
        try:
            table = self._parse(messages, self.shape)
        except pa.ArrowInvalid as exc:
            change = self._kind_change(str(exc))
            if change is not None and 0 <= change[0] < n and (change[0] or change[1] != self.shape):
                row, shape = change
                if row:
                    self._read(messages.slice(0, row), out)
                self.shape = shape
                self._read(messages.slice(row), out)
                return
        else:
            if table.num_rows == n:
                out.append(self._values(table, n))
                return
        middle = n // 2
        self._read(messages.slice(0, middle), out)
        self._read(messages.slice(middle), out)

    def _kind_change(self, error: str) -> tuple[int, _Shape] | None:
        match = _KIND_CHANGE.search(error)
        if match is None or match[3] not in (*_KIND_TYPES, "array", "null"):
            return None
        column, kind, row = match[1], match[3], int(match[4])
        for depth in range(len(self.path)):
            if column == "/" + "/".join(self.path[: depth + 1]):
                if kind == "object" and depth < len(self.path) - 1:
                    return row, _Shape(depth + 1, "number")  # an object on the way: look deeper
                if kind in ("array", "null"):
                    return None  # arrays hold any kinds: those rows go one by one
                return row, _Shape(depth, kind)
        return None

    def _parse(self, messages: pa.Array, shape: _Shape) -> pa.Table:
        import pyarrow.json as pj  # only --where and --by field need it: not imported for other queries

        field_type = _KIND_TYPES[shape.kind]
        for name in reversed(self.path[: shape.depth + 1][1:]):
            field_type = pa.struct([pa.field(name, field_type)])
        schema = pa.schema([pa.field(self.path[0], field_type)])
        data = pc.binary_join_element_wise(messages, "\n", "")
        offsets, values = data.buffers()[1:3]
        first = pa.Array.from_buffers(pa.int32(), len(messages) + 1, [None, offsets], offset=data.offset)
        start, end = first[0].as_py(), first[-1].as_py()
        block = values[start:end] if values is not None else pa.py_buffer(b"")
        return pj.read_json(
            pa.BufferReader(block),
            # One block: row numbers in errors count from the first message, and one thread (the
            # scan already runs a decoding thread per core).
            read_options=pj.ReadOptions(use_threads=False, block_size=max(1, len(block)) + 1),
            parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )

    def _values(self, table: pa.Table, n: int) -> Values:
        column: Any = table.column(0).combine_chunks()
        for _ in range(self.shape.depth):
            column = column.flatten()[0]  # the one field, the parent's nulls folded in
        valid = _repeat(True, n)
        if self.shape.depth < len(self.path) - 1:
            # The path stops at a value that is not an object: nothing there.
            return Values(pa.nulls(n, pa.float64()), pa.nulls(n, pa.string()), _repeat(False, n), valid)
        present = pc.is_valid(column)
        kind = self.shape.kind
        number = column if kind == "number" else pa.nulls(n, pa.float64())
        if kind in ("number", "boolean"):
            text = pc.cast(column, pa.string())
        elif kind == "string":
            text = column
        else:
            text = pa.nulls(n, pa.string())
        return Values(number, text, present, valid)


def _rows(messages: Sequence[str | None], path: tuple[str, ...]) -> Values:
    """The field of each message, parsed one at a time (the fallback; same answers as the bulk read)."""
    numbers: list[float | None] = []
    texts: list[str | None] = []
    present: list[bool] = []
    valid: list[bool] = []
    for message in messages:
        value: Any = None
        is_object = False
        try:
            value = orjson.loads(message) if message is not None else None
            is_object = isinstance(value, dict)
        except orjson.JSONDecodeError:
            pass
        if is_object:
            for name in path:
                value = value.get(name) if isinstance(value, dict) else None
        else:
            value = None
        valid.append(is_object)
        present.append(value is not None)
        if isinstance(value, bool):
            numbers.append(None)
            texts.append("true" if value else "false")
        elif isinstance(value, int | float):
            try:
                numbers.append(float(value))
            except OverflowError:
                numbers.append(None)
            texts.append(None)  # filled from the number below, as Arrow writes it
        else:
            numbers.append(None)
            texts.append(value if isinstance(value, str) else None)
    number = pa.array(numbers, pa.float64())
    text = pa.array(texts, pa.string())
    if number.null_count < len(number):
        has_number = pc.is_valid(number)
        text = pc.replace_with_mask(text, has_number, pc.cast(pc.filter(number, has_number), pa.string()))
    return Values(number, text, pa.array(present, pa.bool_()), pa.array(valid, pa.bool_()))
