"""Query results made safe for a terminal, column-wise (the rule is :mod:`archiver.terminal`'s).

Only the rows holding a control character are rewritten (found with one RE2
pass per column); names are short and such rows rare, so the rewrite itself
is :func:`archiver.terminal.visible` on those rows alone.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from archiver.archive import schema
from archiver.terminal import CONTROL_CLASS, visible
from query import kernels as pc  # not pyarrow.compute: see query.kernels

#: Columns holding names: always shown escaped in text output.
NAME_COLUMNS = (schema.APP, schema.REGION, schema.INSTANCE, schema.PROVIDER, schema.HOST, schema.LEVEL)


def visible_column(column: Any) -> Any:
    """A string column with control characters shown as escapes (the same column when it holds none)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    found = pc.fill_null(pc.match_substring_regex(column, CONTROL_CLASS), pa.scalar(False, pa.bool_()))
    if not pc.any(found).as_py():
        return column
    rewritten = pa.array([visible(text) for text in pc.filter(column, found).to_pylist()], column.type)
    return pc.replace_with_mask(column, found, rewritten)


def safe_for_terminal(table: pa.Table, *, message: bool) -> pa.Table:
    """``table`` with names always escaped and, with ``message``, message text too."""
    columns = [*NAME_COLUMNS, schema.MESSAGE] if message else list(NAME_COLUMNS)
    for name in columns:
        if name in table.column_names:
            index = table.schema.get_field_index(name)
            table = table.set_column(index, table.schema.field(index), visible_column(table[name]))
    return table
