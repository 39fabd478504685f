"""Exact event time across schema versions: (µs ``timestamp``, ``timestamp_nanos``) and int64 nanoseconds.

Schema v2 stores a time as ``timestamp`` (microseconds, what every engine
reads) plus ``timestamp_nanos`` (0-999); schema v1 stored nanoseconds. The
codec splits nanoseconds into the two columns (:func:`split_ns`); readers
join them back (:func:`exact_ns`, :func:`with_exact_time`), and compaction
brings a v1 table to v2 (:func:`to_v2`, the region from the v1 key). Nothing
else converts between them.

The kernels are called through ``pyarrow._compute`` (as :mod:`query.kernels`
does), not ``pyarrow.compute``, whose import costs ~25 ms of every
``archiver query``; checked arithmetic, so a foreign file whose time does
not fit int64 nanoseconds fails to read instead of wrapping around.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pyarrow import _compute

from archiver.archive import schema

_call = _compute.call_function
_INT64 = pa.int64()
_THOUSAND = pa.scalar(1000, _INT64)
_ONE = pa.scalar(1, _INT64)


def _cast(values: Any, target: pa.DataType) -> Any:
    return _call("cast", [values], _compute.CastOptions.safe(target))


def split_ns(ns: Any) -> tuple[Any, Any]:
    """``(timestamp[us, UTC], int16 nanoseconds)`` of exact times (int64 or timestamp[ns] values)."""
    ns = ns if ns.type == _INT64 else _cast(ns, _INT64)
    micros = _call("divide", [ns, _THOUSAND])  # truncates toward zero
    nanos = _call("subtract", [ns, _call("multiply", [micros, _THOUSAND])])
    before_1970 = _call("less", [nanos, pa.scalar(0, _INT64)])
    if _call("any", [before_1970]).as_py():  # floor, so nanos stay in 0-999
        micros = _call("if_else", [before_1970, _call("subtract", [micros, _ONE]), micros])
        nanos = _call("if_else", [before_1970, _call("add", [nanos, _THOUSAND]), nanos])
    return _cast(micros, schema.TIMESTAMP_TYPE), _cast(nanos, schema.NANOS_TYPE)


def exact_ns(timestamps: Any, nanos: Any | None) -> Any:
    """Exact int64 nanoseconds of a ``timestamp`` column and its ``timestamp_nanos`` (None: v1, already ns)."""
    if nanos is None or timestamps.type.unit == "ns":
        return _cast(_cast(timestamps, schema.NS_TIMESTAMP_TYPE), _INT64)
    micros = _cast(_cast(timestamps, schema.TIMESTAMP_TYPE), _INT64)
    return _call("add_checked", [_call("multiply_checked", [micros, _THOUSAND]), _cast(nanos, _INT64)])


def table_ns(table: pa.Table) -> Any:
    """Exact int64 nanoseconds of the rows of a table of either schema version."""
    names = table.column_names
    nanos = table[schema.TIMESTAMP_NANOS] if schema.TIMESTAMP_NANOS in names else None
    return exact_ns(table[schema.TIMESTAMP], nanos)


def with_exact_time(table: pa.Table) -> pa.Table:
    """``table`` with ``timestamp`` as the exact timestamp[ns, UTC] and no ``timestamp_nanos`` (readers)."""
    names = table.column_names
    if schema.TIMESTAMP_NANOS not in names and table.schema.field(schema.TIMESTAMP).type.unit == "ns":
        return table
    exact = _cast(table_ns(table), schema.NS_TIMESTAMP_TYPE)
    out = table.set_column(names.index(schema.TIMESTAMP), schema.TIMESTAMP, exact)
    return out.drop_columns([schema.TIMESTAMP_NANOS]) if schema.TIMESTAMP_NANOS in names else out


def exact_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The rows as dicts, ``timestamp`` as int nanoseconds (Python datetimes stop at microseconds)."""
    names = table.column_names
    out = table.set_column(names.index(schema.TIMESTAMP), schema.TIMESTAMP, table_ns(table))
    rows: list[dict[str, Any]] = (
        out.drop_columns([schema.TIMESTAMP_NANOS]) if schema.TIMESTAMP_NANOS in names else out
    ).to_pylist()
    return rows


def to_v2(table: pa.Table, region: str | None) -> pa.Table:
    """A table of either schema as schema v2 (``schema.FILE_SCHEMA``, no metadata); ``region`` fills a v1 one's."""
    names = table.column_names
    if schema.TIMESTAMP_NANOS in names and table.schema.field(schema.TIMESTAMP).type.unit != "ns":
        micros, nanos = table[schema.TIMESTAMP], table[schema.TIMESTAMP_NANOS]
    else:
        micros, nanos = split_ns(table_ns(table))
    arrays = [micros, nanos]
    for field in schema.FILE_SCHEMA:
        if field.name in (schema.TIMESTAMP, schema.TIMESTAMP_NANOS):
            continue
        if field.name in names:
            arrays.append(_cast(table[field.name], field.type))
        elif field.name == schema.REGION and region is not None:
            arrays.append(pa.repeat(pa.scalar(region, pa.string()), table.num_rows))
        else:
            arrays.append(pa.nulls(table.num_rows, field.type))
    arrays = [
        _cast(a, f.type) if a.type != f.type else a for a, f in zip(arrays, schema.FILE_SCHEMA, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=schema.FILE_SCHEMA.remove_metadata())


def row_group_spans(metadata: Any, arrow_schema: pa.Schema | None = None) -> list[tuple[int, int] | None]:
    """Each row group's first and last possible exact time (ns) from its ``timestamp`` statistics (None: they
    cannot tell). ``metadata`` is a ``pyarrow.parquet.FileMetaData``; ``arrow_schema`` its Arrow schema if
    already built.

    The statistics are raw INT64 values in the column's unit (``as_py`` would round nanoseconds to
    microseconds); schema v2's rows of one microsecond span its 1000 nanoseconds (``timestamp_nanos``).
    """
    arrow = metadata.schema.to_arrow_schema() if arrow_schema is None else arrow_schema
    if schema.TIMESTAMP not in arrow.names or not pa.types.is_timestamp(arrow.field(schema.TIMESTAMP).type):
        return [None] * metadata.num_row_groups
    factor = schema.NS_PER_UNIT[arrow.field(schema.TIMESTAMP).type.unit]
    index = arrow.get_field_index(schema.TIMESTAMP)
    spans: list[tuple[int, int] | None] = []
    for i in range(metadata.num_row_groups):
        stats = metadata.row_group(i).column(index).statistics
        if stats is None or not stats.has_min_max:
            spans.append(None)
        else:
            spans.append((stats.min_raw * factor, stats.max_raw * factor + factor - 1))
    return spans
