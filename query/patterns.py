"""``archiver query --top N``: the most frequent message patterns, with counts, first and last seen, an example.

A pattern is the message with its variable parts collapsed by RE2 replace
kernels, in this order (:data:`COLLAPSE`): UUIDs to ``<uuid>``, IPv4 and IPv6
addresses to ``<ip>``, hex ids (``0x1f``, or a run of hex digits mixing
digits and letters, like an instance id) to ``<hex>``, numbers (also inside
words: ``42ms`` is ``<n>ms``) to ``<n>``, then quoted values (``"..."`` or
``'...'``) to ``"<*>"``. In a JSON message the keys are not values and stay,
as does the text under ``msg``/``message``/``event``/``error`` (numbers and
ids in it still collapse): otherwise every line of a JSON logger would be
one pattern.

Cheap on a day of logs because logs repeat: each hour's rows are first
grouped by exact message (count, first and last time), the collapse runs on
those distinct messages only, and the groups are summed by pattern; memory
holds one row per pattern seen. The work of an hour runs in a worker thread
while the next hours are read.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson
import pyarrow as pa

from archiver.archive import schema
from archiver.archive.timestamps import table_ns
from archiver.storage.open import open_read_storage
from archiver.terminal import visible
from query.run import Progress, QueryRequest, each_table, note_nothing, open_reader, plan_request, writing
from query.scan import ScanStats
from query.textout import iso_time, open_output, table_lines

_HEX4 = "[0-9a-fA-F]{1,4}"
_KEY_MARK, _TEXT_MARK = "\ue000", "\ue001"  # private-use characters: never in a pattern's output
_STRING = r'"((?:[^"\\]|\\.)*)"'
#: (RE2 pattern, replacement) applied in order to each distinct message.
COLLAPSE: tuple[tuple[str, str], ...] = (
    (r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", "<uuid>"),
    # IPv6: eight groups, or "::" with a group on at least one side (C++'s std::string stays).
    (rf"\b(?:{_HEX4}:){{7}}{_HEX4}\b|\b{_HEX4}(?::{_HEX4}){{0,6}}::(?:{_HEX4}(?::{_HEX4}){{0,6}}\b)?"
     rf"|::{_HEX4}(?::{_HEX4}){{0,6}}\b", "<ip>"),
    (r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b", "<ip>"),
    (r"\b(?:0[xX][0-9a-fA-F]+|[0-9a-fA-F]*(?:[0-9][0-9a-fA-F]*[a-fA-F]|[a-fA-F][0-9a-fA-F]*[0-9])[0-9a-fA-F]*)\b",
     "<hex>"),
    (r"[0-9]+(?:\.[0-9]+)?", "<n>"),
    # Quoted values: a JSON key, and the text under a message key, are marked first and kept.
    (rf'"((?i:msg|message|event|error|err))"(\s*):(\s*){_STRING}', f"{_KEY_MARK}\\1{_KEY_MARK}\\2:\\3{_TEXT_MARK}\\4{_TEXT_MARK}"),
    (rf"{_STRING}(\s*):", f"{_KEY_MARK}\\1{_KEY_MARK}\\2:"),
    (r'"(?:[^"\\]|\\.)*"', '"<*>"'),
    # Single quotes only after a blank or punctuation: the apostrophe in "it's" opens nothing.
    (r"(^|[\s=:(\[,])'(?:[^'\\]|\\.)*'", "\\1'<*>'"),
    (f"[{_KEY_MARK}{_TEXT_MARK}]", '"'),
)  # fmt: skip
MESSAGE, PATTERN, COUNT, FIRST, LAST, EXAMPLE = "message", "pattern", "count", "first", "last", "example"
#: Per-hour pattern tables kept before they are summed into one.
MERGE_EVERY = 16


def collapse(messages: Any) -> Any:
    """The pattern of each message (a string array)."""
    import pyarrow.compute as pc

    for pattern, replacement in COLLAPSE:
        messages = pc.replace_substring_regex(messages, pattern=pattern, replacement=replacement)
    return messages


def hour_patterns(table: pa.Table) -> pa.Table:
    """Rows of one scanned table grouped by pattern: pattern, count, first, last (ns), example."""
    ts = table_ns(table)  # the exact time (query.decode brought every file to it)
    rows = pa.table({MESSAGE: table[schema.MESSAGE], "ts": ts})
    distinct = rows.group_by(MESSAGE, use_threads=False).aggregate(
        [([], "count_all"), ("ts", "min"), ("ts", "max")]
    )
    messages = distinct[MESSAGE]
    grouped = pa.table(
        {
            PATTERN: collapse(messages),
            COUNT: distinct["count_all"],
            FIRST: distinct["ts_min"],
            LAST: distinct["ts_max"],
            EXAMPLE: messages,
        }
    )
    return merge_patterns([grouped])


def merge_patterns(tables: list[pa.Table]) -> pa.Table:
    """Pattern tables summed per pattern (the first table's example kept)."""
    merged = (
        pa.concat_tables(tables)
        .group_by(PATTERN, use_threads=False)
        .aggregate([(COUNT, "sum"), (FIRST, "min"), (LAST, "max"), (EXAMPLE, "first")])
    )
    return merged.rename_columns([PATTERN, COUNT, FIRST, LAST, EXAMPLE])


def top_patterns(table: pa.Table, n: int) -> list[dict[str, Any]]:
    """The ``n`` largest groups, largest first (ties: by pattern)."""
    ordered = table.sort_by([(COUNT, "descending"), (PATTERN, "ascending")]).slice(0, n)
    found: list[dict[str, Any]] = ordered.to_pylist()
    return found


async def run_top(request: QueryRequest) -> int:
    """Print the ``--top`` N patterns of the matching logs."""
    assert request.top is not None
    output = open_output(request.output)
    storage = open_read_storage(request.archive)
    reader = open_reader(request.archive, storage)
    stats = ScanStats()
    progress = Progress(stats, sys.stderr)
    try:
        planner = await plan_request(request, storage)
        progress.start()
        partials: list[pa.Table] = []
        columns = (schema.TIMESTAMP, schema.MESSAGE)
        async for table in each_table(request, reader, stats, planner, columns=columns, in_order=False):
            partials.append(await asyncio.to_thread(hour_patterns, table))
            if len(partials) >= MERGE_EVERY:
                partials = [await asyncio.to_thread(merge_patterns, partials)]
        top = top_patterns(merge_patterns(partials), request.top) if partials else []
        progress.stop()
        if not top:
            note_nothing(stats, planner, planner.apps)
        with writing(request.output or "the results to stdout"):
            (output or sys.stdout.buffer).write(render_top(top, request.output_format))
            (output or sys.stdout.buffer).flush()
        return 0
    finally:
        progress.stop()
        if output is not None:
            output.close()
        reader.close()
        await storage.close()


def render_top(top: list[dict[str, Any]], fmt: str) -> bytes:
    """The patterns as a table (text), JSON lines or CSV."""
    records = [
        {COUNT: r[COUNT], FIRST: iso_time(r[FIRST]), LAST: iso_time(r[LAST]), PATTERN: r[PATTERN],
         EXAMPLE: r[EXAMPLE]}
        for r in top
    ]  # fmt: skip
    if fmt == "text":
        return _text(top)
    if fmt == "json":
        return b"".join(orjson.dumps(r) + b"\n" for r in records)
    if fmt == "csv":
        import csv
        import io

        text = io.StringIO()
        writer = csv.DictWriter(text, [COUNT, FIRST, LAST, PATTERN, EXAMPLE], lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
        return text.getvalue().encode()
    raise AssertionError(fmt)


def _text(top: list[dict[str, Any]]) -> bytes:
    if not top:
        return b""
    rows = []
    for r in top:
        # Text output is for reading: patterns and examples shown escaped, on one line each.
        first, last = (iso_time(r[key] // 10**9 * 10**9) for key in (FIRST, LAST))
        rows.append([f"{r[COUNT]:,}", first, last, _shown(r[PATTERN])])
        rows.append(["", "", "", "e.g. " + _shown(r[EXAMPLE])])
    lines = table_lines(["COUNT", "FIRST (UTC)", "LAST (UTC)", "PATTERN"], rows, {0})
    return "".join(lines).encode()


def _shown(text: str | None) -> str:
    return "(no message)" if text is None else visible(text)
