"""What a merge needs to know of an input file before reading its rows: is it an archive file, and its time bounds.

A compaction rewrites its inputs and then deletes them, so an input that is
not an archive file of schema v1 or v2 is never merged (:func:`input_problem`);
the merge opens inputs in the order of their footers' time bounds
(:func:`time_bounds`).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.timestamps import row_group_spans


def _stringish(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _stringish(kind.value_type)
    return bool(pa.types.is_string(kind) or pa.types.is_large_string(kind))


def schema_problem(file_schema: pa.Schema, *, exact: bool = False) -> str | None:
    """Why a Parquet file is not an archive file, from its schema; None when it is one.

    An archive file has a timestamp column, an integer ``timestamp_nanos`` if
    any, and string columns. ``exact`` (for compaction, which rewrites and then
    deletes its inputs) also wants every column of schema v1 or v2 and no
    other, so no foreign data is dropped or converted.
    """
    names = file_schema.names
    if schema.TIMESTAMP not in names or not pa.types.is_timestamp(file_schema.field(schema.TIMESTAMP).type):
        return "not an archive file (no timestamp column)"
    for field in file_schema:
        if field.name == schema.TIMESTAMP_NANOS:
            if not pa.types.is_integer(field.type):
                return f"not an archive file (column {field.name} is {field.type})"
        elif (
            field.name in schema.FILE_SCHEMA.names
            and field.name != schema.TIMESTAMP
            and not _stringish(field.type)
        ):
            return f"not an archive file (column {field.name} is {field.type})"
    if exact and sorted(names) not in (sorted(schema.FILE_SCHEMA.names), sorted(schema.V1_COLUMNS)):
        return f"not an archive file of schema v1 or v2 (columns {', '.join(names)})"
    return None


def input_problem(path: str) -> str | None:
    """Why one compaction input (a local file) cannot be merged without losing or altering data; None when it can."""
    try:
        metadata = pq.read_metadata(path)
        return schema_problem(metadata.schema.to_arrow_schema(), exact=True)
    except (pa.ArrowException, OSError, ValueError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0]


def is_sorted(stamps: Any) -> bool:
    """Whether timestamps never decrease."""
    return len(stamps) < 2 or bool(
        pc.all(pc.less_equal(stamps.slice(0, len(stamps) - 1), stamps.slice(1))).as_py()
    )


def time_bounds(metadata: pq.FileMetaData) -> tuple[int | None, int | None]:
    """Bounds of a file's exact times (ns) from its row-group statistics of ``timestamp``; None where unknown.

    Schema v2's ``timestamp`` is microseconds: the exact time lies within the
    microsecond (``timestamp_nanos`` 0-999), so the bounds widen by it.
    """
    spans = [span for i, span in enumerate(row_group_spans(metadata)) if metadata.row_group(i).num_rows]
    known = [span for span in spans if span is not None]
    if not known or len(known) < len(spans):
        return None, None
    return min(low for low, _ in known), max(high for _, high in known)
