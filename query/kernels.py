"""The few Arrow compute kernels a query uses, called by name without importing ``pyarrow.compute``.

The functions are named after the kernels (``any``, ``all`` and ``filter`` shadow builtins here, on purpose).

Importing ``pyarrow.compute`` builds a Python wrapper with a generated
docstring for each of its ~600 functions: ~20-30 ms, a tenth of a whole
``archiver query --since 1h`` process. The kernels themselves live in
``pyarrow._compute`` (~3 ms to import) and are called here through
``call_function`` with the same options the ``pyarrow.compute`` wrappers
build, so results are identical. Methods like ``Table.filter``, ``Table.take``
and ``ChunkedArray.cast`` import ``pyarrow.compute`` behind the scenes: the
query path uses :func:`filter`, :func:`take` and :func:`cast` from here instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
from pyarrow import _compute

_call = _compute.call_function


def call(name: str, *args: Any) -> Any:
    """The kernel ``name`` on ``args`` with its default options (``min``, ``add``, ``value_counts``...)."""
    return _call(name, list(args))


def cast(value: Any, target_type: pa.DataType) -> Any:
    """``value`` (array, chunked array or scalar) as ``target_type``, safe (like ``value.cast(target_type)``)."""
    return _call("cast", [value], _compute.CastOptions.safe(target_type))


def filter(data: Any, mask: Any) -> Any:
    """Rows of ``data`` (table or array) where ``mask`` is true; null drops the row (``Table.filter``)."""
    return _call("filter", [data, mask], _compute.FilterOptions("drop"))


def take(data: Any, indices: Any) -> Any:
    """Rows of ``data`` at ``indices`` (``Table.take``)."""
    return _call("take", [data, indices], _compute.TakeOptions(boundscheck=True))


def sort_indices(data: Any, sort_keys: Sequence[tuple[str, str]]) -> Any:
    """Indices that sort ``data`` by ``sort_keys``, stable (``pyarrow.compute.sort_indices``)."""
    return _call("sort_indices", [data], _compute.SortOptions(sort_keys=list(sort_keys)))


def any(values: Any) -> Any:
    """Whether any value is true, nulls skipped (a BooleanScalar)."""
    return _call("any", [values])


def all(values: Any) -> Any:
    """Whether every value is true, nulls skipped (a BooleanScalar)."""
    return _call("all", [values])


def less(left: Any, right: Any) -> Any:
    """Element-wise ``left < right``."""
    return _call("less", [left, right])


def less_equal(left: Any, right: Any) -> Any:
    """Element-wise ``left <= right``."""
    return _call("less_equal", [left, right])


def greater_equal(left: Any, right: Any) -> Any:
    """Element-wise ``left >= right``."""
    return _call("greater_equal", [left, right])


def and_kleene(left: Any, right: Any) -> Any:
    """Element-wise logical and, Kleene logic for nulls."""
    return _call("and_kleene", [left, right])


def is_in(values: Any, value_set: Any) -> Any:
    """Element-wise membership of ``values`` in ``value_set`` (nulls never match)."""
    return _call("is_in", [values], _compute.SetLookupOptions(value_set))


def compare(op: str, left: Any, right: Any) -> Any:
    """Element-wise comparison: ``op`` is one of equal, not_equal, less, less_equal, greater, greater_equal."""
    return _call(op, [left, right])


def or_kleene(left: Any, right: Any) -> Any:
    """Element-wise logical or, Kleene logic for nulls."""
    return _call("or_kleene", [left, right])


def invert(values: Any) -> Any:
    """Element-wise logical not."""
    return _call("invert", [values])


def is_valid(values: Any) -> Any:
    """Element-wise: is the value not null."""
    return _call("is_valid", [values])


def fill_null(values: Any, fill: Any) -> Any:
    """``values`` with nulls replaced by the scalar ``fill``."""
    return _call("coalesce", [values, fill])


def replace_with_mask(values: Any, mask: Any, replacements: Any) -> Any:
    """``values`` with the positions where ``mask`` is true taken, in order, from ``replacements``."""
    return _call("replace_with_mask", [values, mask, replacements])


def indices_nonzero(values: Any) -> Any:
    """Positions (uint64) where a boolean array is true."""
    return _call("indices_nonzero", [values])


def utf8_slice(strings: Any, start: int, stop: int | None) -> Any:
    """Characters ``[start, stop)`` of each string (negative from the end), as ``utf8_slice_codeunits``."""
    end = stop if stop is not None else 2**63 - 1
    return _call("utf8_slice_codeunits", [strings], _compute.SliceOptions(start, end))


def first_and_last_bytes(strings: Any) -> tuple[Any, Any]:
    """The first and the last byte of each string, as binary (a view of the strings, no copy; nulls stay null).

    For comparing with ASCII characters: in UTF-8 an ASCII byte is never part of another character, and
    slicing bytes from the end is one step where ``utf8_slice(-1)`` walks back over characters (5x slower).
    """
    as_bytes = strings.view(pa.large_binary() if pa.types.is_large_string(strings.type) else pa.binary())
    return (
        _call("binary_slice", [as_bytes], _compute.SliceOptions(0, 1)),
        _call("binary_slice", [as_bytes], _compute.SliceOptions(-1, 2**63 - 1)),
    )


def utf8_lower(strings: Any) -> Any:
    """Lower-cased UTF-8 strings."""
    return _call("utf8_lower", [strings])


def match_substring_regex(strings: Any, pattern: str, *, ignore_case: bool = False) -> Any:
    """Element-wise: does the RE2 ``pattern`` match somewhere in the string."""
    return _call(
        "match_substring_regex", [strings], _compute.MatchSubstringOptions(pattern, ignore_case=ignore_case)
    )


def literal_pattern(text: str) -> str:
    """An RE2 pattern matching exactly ``text``: every ASCII punctuation character escaped."""
    return "".join("\\" + c if c.isascii() and not c.isalnum() and not c.isspace() else c for c in text)


def run_end_decode(array: Any) -> Any:
    """A run-end encoded array expanded to a plain one."""
    return _call("run_end_decode", [array])


def utf8_replace_slice(strings: Any, start: int, stop: int, replacement: str) -> Any:
    """Each string with code units ``[start, stop)`` replaced by ``replacement``."""
    return _call("utf8_replace_slice", [strings], _compute.ReplaceSliceOptions(start, stop, replacement))


def binary_join_element_wise(*strings: Any, null_replacement: str | None = "") -> Any:
    """Element-wise concatenation; the last argument is the separator; nulls become ``null_replacement``.

    With ``null_replacement=None`` a null anywhere makes the result null.
    """
    if null_replacement is None:
        options = _compute.JoinOptions(null_handling="emit_null")
    else:
        options = _compute.JoinOptions(null_handling="replace", null_replacement=null_replacement)
    # Literals as typed scalars: letting Arrow infer a str's type imports dateutil (6 ms) once.
    args = [pa.scalar(s, pa.string()) if isinstance(s, str) else s for s in strings]
    return _call("binary_join_element_wise", args, options)


def conform(table: pa.Table, target: pa.Schema) -> pa.Table:
    """``table`` (same column names, in order) with ``target``'s schema, like ``table.cast(target)``."""
    columns = [
        column if column.type == field.type else cast(column, field.type)
        for column, field in zip(table.columns, target, strict=True)
    ]
    return pa.Table.from_arrays(columns, schema=target)
