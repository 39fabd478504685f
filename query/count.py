"""``archiver query --count``: matching logs per time bucket (and per app, region, instance, level or JSON field).

The same plan, filters and scan as printing logs, reading only the columns
the count needs (the timestamp, the ``--by`` column; the message only when a
filter or a ``field:`` grouping needs it) and skipping the hour's time-order
merge. Rows are counted with Arrow (``group_by`` on the bucket and the group)
:data:`COUNT_ROWS` at a time in a worker thread while the next hours are
read; the small counts are summed at the end. Buckets are aligned to the UNIX epoch
(UTC: days start at midnight); ``--every`` is their width, by default the
first of :data:`NICE_WIDTHS_S` that splits the range into at most
:data:`TARGET_BUCKETS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import orjson
import pyarrow as pa

from archiver.archive import schema
from archiver.archive.timestamps import table_ns
from archiver.errors import UsageError
from archiver.storage.open import open_read_storage
from query import count_fast
from query import kernels as pc  # not pyarrow.compute: see query.kernels
from query.jsonfields import extract
from query.modes import CountSpec
from query.plan import HourFiles, Planner
from query.run import Progress, QueryRequest, note_nothing, open_reader, plan_request, warn, writing
from query.scan import Reader, ScanStats, scan_hours
from query.textout import bucket_label, iso_time, open_output, render_chart

NS = 1_000_000_000
NICE_WIDTHS_S = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                 172800, 604800, 2592000)  # fmt: skip
TARGET_BUCKETS = 40
#: Rows gathered (from one or more hours) before they are counted.
COUNT_ROWS = 1_000_000
#: Hours counted at once on the fast path (their files are fetched and read concurrently).
FAST_HOURS_IN_FLIGHT = 8
BUCKET, GROUP, COUNT = "bucket", "group", "count"


def default_every_ns(since_ns: int, until_ns: int) -> int:
    """The bucket width for a range: the first nice width giving at most TARGET_BUCKETS buckets."""
    for width_s in NICE_WIDTHS_S:
        if (until_ns - since_ns) / (width_s * NS) <= TARGET_BUCKETS:
            return width_s * NS
    return NICE_WIDTHS_S[-1] * NS


def file_columns(spec: CountSpec) -> tuple[str, ...]:
    """The file columns a count reads (app and region come with every scan)."""
    columns = [schema.TIMESTAMP]
    if spec.by_column is not None and spec.by_column in schema.FILE_SCHEMA.names:
        columns.append(spec.by_column)
    if spec.by_field is not None:
        columns.append(schema.MESSAGE)
    return tuple(columns)


def count_table(table: pa.Table, spec: CountSpec, every_ns: int) -> pa.Table:
    """Rows of ``table`` per (bucket start ns, group): columns bucket, group (string or null), count.

    One ``value_counts`` over an int64 key (bucket number × groups + group number): kernels called
    by name, so counting imports neither ``pyarrow.compute`` nor Acero (~50 ms of a 1 s count).
    """
    ts = table_ns(table).combine_chunks()  # the exact time (query.decode brought every file to it)
    # From the first bucket on, every offset is >= 0, so integer division floors (before 1970 too).
    base = (pc.call("min", ts).as_py() or 0) // every_ns * every_ns
    number = pc.call(
        "divide", pc.call("subtract", ts, pa.scalar(base, pa.int64())), pa.scalar(every_ns, pa.int64())
    )
    if spec.by_field is not None:
        group = extract(table[schema.MESSAGE], spec.by_field).text
    elif spec.by_column is not None:
        group = pc.cast(table[spec.by_column].combine_chunks(), pa.string())
    else:
        group = pa.nulls(len(table), pa.string())
    encoded = pc.call("dictionary_encode", group)
    names = encoded.dictionary.to_pylist()
    width = pa.scalar(len(names) + 1, pa.int64())
    # Group number 0 is null, n + 1 is names[n].
    index = pc.call("add", pc.fill_null(pc.cast(encoded.indices, pa.int64()), pa.scalar(-1, pa.int64())),
                    pa.scalar(1, pa.int64()))  # fmt: skip
    found = pc.call("value_counts", pc.call("add", pc.call("multiply", number, width), index))
    keys, counts = found.field(0).to_pylist(), found.field(1).to_pylist()
    n = len(names) + 1
    return pa.table({
        BUCKET: pa.array([base + k // n * every_ns for k in keys], pa.int64()),
        GROUP: pa.array([None if k % n == 0 else names[k % n - 1] for k in keys], pa.string()),
        COUNT: pa.array(counts, pa.int64()),
    })  # fmt: skip


def add_counts(summed: dict[tuple[int, str | None], int], table: pa.Table) -> None:
    """Add a table of counts (bucket, group, count) to ``summed``, per (bucket, group)."""
    for bucket, group, count in zip(
        table[BUCKET].to_pylist(), table[GROUP].to_pylist(), table[COUNT].to_pylist(), strict=True
    ):
        summed[bucket, group] = summed.get((bucket, group), 0) + count


def sorted_counts(summed: dict[tuple[int, str | None], int]) -> pa.Table:
    """The counts as a table (bucket, group, count), sorted by bucket then group (nulls last)."""
    ordered = sorted(summed, key=lambda k: (k[0], k[1] is None, k[1] or ""))
    return pa.table({
        BUCKET: pa.array([k[0] for k in ordered], pa.int64()),
        GROUP: pa.array([k[1] for k in ordered], pa.string()),
        COUNT: pa.array([summed[k] for k in ordered], pa.int64()),
    })  # fmt: skip


async def counted_tables(
    request: QueryRequest, reader: Reader, stats: ScanStats, planner: Planner, spec: CountSpec, every_ns: int
) -> AsyncGenerator[pa.Table, None]:
    """Counts (bucket, group, count) of the request, a table at a time."""
    filters = request.filters()
    slow: list[HourFiles] = []
    if count_fast.applies(spec, every_ns, filters):
        # Hours from footers or one dictionary column (query.count_fast), a few hours at a time.
        limit = asyncio.Semaphore(FAST_HOURS_IN_FLIGHT)
        days = count_fast.DayFiles()

        async def fast(group: HourFiles) -> pa.Table | None:
            async with limit:
                found = await count_fast.hour_counts(reader, group, spec, filters, days)
            if found is None:
                slow.append(group)
                return None
            stats.hours += 1
            stats.read(group.files)
            stats.rows += sum(found.values())
            bucket = group.hour_ns // every_ns * every_ns
            return pa.table({BUCKET: pa.array([bucket] * len(found), pa.int64()),
                             GROUP: pa.array(list(found), pa.string()), COUNT: pa.array(list(found.values()), pa.int64())})  # fmt: skip

        tasks = []
        async for group in planner.hours():
            tasks.append(asyncio.ensure_future(fast(group)))
        try:
            for task in tasks:
                table = await task
                if table is not None and table.num_rows:
                    yield table
        finally:
            for task in tasks:
                task.cancel()
        if not slow:
            return
        hours: AsyncIterator[HourFiles] = _each(sorted(slow, key=lambda g: g.hour_ns))
    else:
        hours = planner.hours()
    tables = scan_hours(reader, hours, columns=file_columns(spec), filters=filters, stats=stats, warn=warn,
                        replan=planner.relist, strict=request.strict, in_order=False)  # fmt: skip
    pending: list[pa.Table] = []
    pending_rows = 0
    async with contextlib.aclosing(tables):
        async for table in tables:
            # Several hours at a time: a group_by has a fixed cost (~ms) an hour would pay alone.
            pending.append(table)
            pending_rows += table.num_rows
            if pending_rows >= COUNT_ROWS:
                yield await asyncio.to_thread(count_table, pa.concat_tables(pending), spec, every_ns)
                pending, pending_rows = [], 0
    if pending:
        yield await asyncio.to_thread(count_table, pa.concat_tables(pending), spec, every_ns)


async def _each(groups: list[HourFiles]) -> AsyncGenerator[HourFiles, None]:
    for group in groups:
        yield group


async def run_count(request: QueryRequest) -> int:
    """Count the matching logs per bucket and group, and print the table and chart (or json/csv)."""
    spec = request.count
    assert spec is not None
    every_ns = spec.every_ns or default_every_ns(request.since_ns, request.until_ns)
    if (request.until_ns - request.since_ns) // every_ns > 10_000_000:
        raise UsageError("--every: more than 10,000,000 buckets in the range; give a wider --every")
    output = open_output(request.output)
    storage = open_read_storage(request.archive)
    reader = open_reader(request.archive, storage)
    stats = ScanStats()
    progress = Progress(stats, sys.stderr)
    try:
        planner = await plan_request(request, storage)
        progress.start()
        summed: dict[tuple[int, str | None], int] = {}
        async for table in counted_tables(request, reader, stats, planner, spec, every_ns):
            add_counts(summed, table)
        counts = sorted_counts(summed)
        progress.stop()
        if not len(counts):
            note_nothing(stats, planner, planner.apps)
        where = request.output or "the results to stdout"
        with writing(where):
            (output or sys.stdout.buffer).write(render_counts(counts, spec, every_ns, request))
            (output or sys.stdout.buffer).flush()
        return 0
    finally:
        progress.stop()
        if output is not None:
            output.close()
        reader.close()
        await storage.close()


def render_counts(counts: pa.Table, spec: CountSpec, every_ns: int, request: QueryRequest) -> bytes:
    """The counts in the request's format: a table and chart, JSON lines or CSV."""
    rows = list(zip(*(counts[name].to_pylist() for name in (BUCKET, GROUP, COUNT)), strict=True))
    label = spec.by_label
    fmt = request.output_format
    out = bytearray()
    if fmt == "json":
        for bucket, group, count in rows:
            record: dict[str, Any] = {"time": iso_time(bucket)}
            if label is not None:
                record[label] = group
            record["count"] = count
            out += orjson.dumps(record) + b"\n"
    elif fmt == "csv":
        import csv
        import io

        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(["time", label, "count"] if label is not None else ["time", "count"])
        for bucket, group, count in rows:
            writer.writerow(
                [iso_time(bucket), group, count] if label is not None else [iso_time(bucket), count]
            )
        out += text.getvalue().encode()
    else:
        lines = render_chart(rows, label, every_ns, lambda ns: bucket_label(ns, every_ns))
        out += "".join(lines).encode()
    return bytes(out)
