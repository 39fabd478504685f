"""Thrift's compact protocol, read into plain values and written back byte for byte: for Parquet footers.

pyarrow reads and writes Parquet footers but does not let one be edited; the
day roll-up copies row groups between files and must move their offsets
(:mod:`archiver.codec.concat`). A struct reads as a :class:`Struct` (field id to
``(type, value)``, in the order read), a list or set as :class:`Items` (the field's
type tells which), a map as
:class:`Pairs`; numbers as int, binary as bytes, a double as its 8 raw bytes, a
bool as bool. Unknown fields are kept as they are, so writing what was read
gives the same bytes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from archiver.errors import EncodeError

BOOL_TRUE, BOOL_FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(1, 13)
_STOP = 0


@dataclass(slots=True)
class Struct:
    """A struct's fields: id -> (compact type, value)."""

    fields: dict[int, tuple[int, Any]] = field(default_factory=dict)

    def get(self, field_id: int) -> Any:
        """The field's value, None when absent."""
        found = self.fields.get(field_id)
        return None if found is None else found[1]

    def set(self, field_id: int, kind: int, value: Any) -> None:
        """Set (or add, after the others) a field."""
        self.fields[field_id] = (kind, value)


@dataclass(slots=True)
class Items:
    """A list (or set) and its element type."""

    kind: int
    values: list[Any]


@dataclass(slots=True)
class Pairs:
    """A map and its key and value types."""

    key_kind: int
    value_kind: int
    pairs: list[tuple[Any, Any]]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def byte(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise EncodeError("truncated Thrift data")
        value = self.data[self.at : self.at + n]
        self.at += n
        return value

    def value(self, kind: int) -> Any:
        if kind in (BOOL_TRUE, BOOL_FALSE):  # in a list: one byte each
            return self.byte() == BOOL_TRUE
        if kind == BYTE:
            return self.byte()
        if kind in (I16, I32, I64):
            return self.zigzag()
        if kind == DOUBLE:
            return self.take(8)
        if kind == BINARY:
            return self.take(self.varint())
        if kind in (LIST, SET):
            head = self.byte()
            size = head >> 4 if head >> 4 != 15 else self.varint()
            element = head & 0x0F
            return Items(element, [self.value(element) for _ in range(size)])
        if kind == MAP:
            size = self.varint()
            if not size:
                return Pairs(0, 0, [])
            kinds = self.byte()
            key, val = kinds >> 4, kinds & 0x0F
            return Pairs(key, val, [(self.value(key), self.value(val)) for _ in range(size)])
        if kind == STRUCT:
            return self.struct()
        raise EncodeError(f"unknown Thrift type {kind}")

    def struct(self) -> Struct:
        out = Struct()
        last = 0
        while True:
            head = self.byte()
            kind = head & 0x0F
            if kind == _STOP:
                return out
            delta = head >> 4
            last = last + delta if delta else self.zigzag()
            out.fields[last] = (
                kind,
                kind == BOOL_TRUE if kind in (BOOL_TRUE, BOOL_FALSE) else self.value(kind),
            )


def read_struct(data: bytes) -> tuple[Struct, int]:
    """A struct from the start of ``data``, and how many bytes it took; EncodeError when malformed."""
    reader = _Reader(data)
    try:
        return reader.struct(), reader.at
    except IndexError:
        raise EncodeError("truncated Thrift data") from None
    except RecursionError:
        raise EncodeError("Thrift structs nested too deep") from None


def _varint(out: bytearray, n: int) -> None:
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _zigzag(out: bytearray, n: int) -> None:
    _varint(out, (n << 1) ^ (n >> 63))


def _value(out: bytearray, kind: int, value: Any) -> None:
    if kind in (BOOL_TRUE, BOOL_FALSE):
        out.append(BOOL_TRUE if value else BOOL_FALSE)
    elif kind == BYTE:
        out.append(value)
    elif kind in (I16, I32, I64):
        _zigzag(out, value)
    elif kind == DOUBLE:
        out += value
    elif kind == BINARY:
        _varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        size = len(value.values)
        if size < 15:
            out.append(size << 4 | value.kind)
        else:
            out.append(0xF0 | value.kind)
            _varint(out, size)
        for item in value.values:
            _value(out, value.kind, item)
    elif kind == MAP:
        _varint(out, len(value.pairs))
        if value.pairs:
            out.append(value.key_kind << 4 | value.value_kind)
            for key, val in value.pairs:
                _value(out, value.key_kind, key)
                _value(out, value.value_kind, val)
    elif kind == STRUCT:
        _struct(out, value)
    else:
        raise EncodeError(f"unknown Thrift type {kind}")


def _struct(out: bytearray, struct: Struct) -> None:
    last = 0
    for field_id, (kind, value) in struct.fields.items():
        wire = (BOOL_TRUE if value else BOOL_FALSE) if kind in (BOOL_TRUE, BOOL_FALSE) else kind
        if 0 < field_id - last <= 15:
            out.append((field_id - last) << 4 | wire)
        else:
            out.append(wire)
            _zigzag(out, field_id)
        if kind not in (BOOL_TRUE, BOOL_FALSE):
            _value(out, kind, value)
        last = field_id
    out.append(_STOP)


def write_struct(struct: Struct) -> bytes:
    """The struct in the compact protocol."""
    out = bytearray()
    _struct(out, struct)
    return bytes(out)
