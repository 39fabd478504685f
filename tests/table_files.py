"""Small schema v2-shaped archive files for the table tests, written through the Storage interface.

Until layout v2 and the v2 encoder land (issue 13), the tests write v2-shaped files themselves:
the columns of :data:`archiver.table.schema.DATA_COLUMNS` (timestamp in UTC microseconds,
timestamp_nanos int16, region), keys ``app=<Hive-escaped app>/date=<YYYY-MM-DD>/<name>.parquet``
(design13.md's escaping). Every row's ``message`` is a unique id, so a reader's answer can be
checked row by row: each row exactly once.
"""

from __future__ import annotations

import datetime as dt
import io
import time
from collections.abc import Sequence
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.storage.interface import Storage
from archiver.table.files import LiveFile, TableFile
from archiver.table.schema import APP, DATE, TABLE_SCHEMA
from archiver.table.stats import file_stats

FILE_SCHEMA = pa.schema([f for f in TABLE_SCHEMA if f.name not in (APP, DATE)])
_ESCAPED = set("\"#%'*/:=?\\{[]^~\x7f") | {chr(c) for c in range(0x20)}
EMPTY = "__HIVE_DEFAULT_PARTITION__"


def escape(app: str) -> str:
    """design13's Hive escaping of a partition value (the tests' apps are short: no shortening)."""
    if not app:
        return EMPTY
    return "".join(f"%{ord(c):02X}" if c in _ESCAPED else c for c in app)


def parse_key(key: str) -> tuple[str, str] | None:
    """(app, date) of a v2 data file key ``app=<v>/date=<d>/<name>.parquet``; None otherwise."""
    parts = key.split("/")
    if len(parts) != 3 or not parts[0].startswith("app=") or not parts[1].startswith("date="):
        return None
    value = parts[0][4:]
    return ("" if value == EMPTY else unquote(value)), parts[1][5:]


def v2_bytes(messages: Sequence[str], start: dt.datetime, region: str | None = "ams") -> bytes:
    """A schema v2 Parquet file: one row per message, 1.000001 s apart from ``start``, nanos 0..n."""
    n = len(messages)
    times = [start + dt.timedelta(seconds=i, microseconds=i) for i in range(n)]
    columns = {
        "timestamp": pa.array(times, pa.timestamp("us", tz="UTC")),
        "timestamp_nanos": pa.array([i % 1000 for i in range(n)], pa.int16()),
        "region": [region] * n,
        "message": list(messages),
    }
    table = pa.table(
        {f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in FILE_SCHEMA}, schema=FILE_SCHEMA
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def v1_bytes(messages: Sequence[str], start: dt.datetime) -> bytes:
    """A schema v1-shaped file (nanosecond timestamps, no region): never registered in the table."""
    table = pa.table(
        {
            "timestamp": pa.array([start] * len(messages), pa.timestamp("ns", tz="UTC")),
            "message": list(messages),
        }
    )
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


async def put_v2(
    storage: Storage, app: str, date: str, name: str, messages: Sequence[str], region: str | None = "ams"
) -> TableFile:
    """Upload a v2 file of ``messages`` for app/date; its TableFile (exact stats from its footer)."""
    start = dt.datetime.fromisoformat(date).replace(hour=3, tzinfo=dt.UTC)
    data = v2_bytes(messages, start, region)
    key = f"app={escape(app)}/date={date}/{name}.parquet"
    await storage.put(key, data)
    stats = file_stats(pq.read_metadata(io.BytesIO(data)))
    return TableFile(key, len(data), app, date, stats, time.time_ns() // 1_000_000)


def live(file: TableFile) -> LiveFile:
    """The LiveFile a TableFile becomes once committed."""
    return LiveFile(file.key, file.size, file.app, file.date)


def ids(prefix: str, count: int) -> list[str]:
    """``count`` unique message ids."""
    return [f"{prefix}-{i}" for i in range(count)]
