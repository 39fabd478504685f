"""The Delta schema of the archive table: schema v2's file columns plus the partition columns.

The table root is the archive root (``_delta_log/`` beside the ``app=`` folders). Partition
columns are ``app`` (string, the TRUE app name; the empty app is ``""``, which Delta readers
return as NULL) and ``date`` (date, ``YYYY-MM-DD``). The data columns are exactly those of a
schema v2 file (design13): ``timestamp`` timestamp[us, UTC] and ``timestamp_nanos``
int16 (Delta ``short``), both not null, then ``region`` and the message columns as strings.

This is the one place the table's columns are written down; once schema v2 lands in
:mod:`archiver.archive.schema`, the column list here is derived from its constants.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = "timestamp"
TIMESTAMP_NANOS = "timestamp_nanos"
REGION = "region"
APP = "app"
DATE = "date"

#: Partition columns, in the order of the key's folders (``app=<app>/date=<date>/``).
PARTITION_COLUMNS = (APP, DATE)

#: Columns of a schema v2 file, in file order (design13.md "Schema v2").
DATA_COLUMNS = (
    TIMESTAMP, TIMESTAMP_NANOS, REGION, "instance", "host", "provider", "level", "fly_level", "message", "extra",
)  # fmt: skip

#: Columns whose min/max go into an AddAction's stats (readers skip files by them).
MIN_MAX_COLUMNS = (TIMESTAMP, TIMESTAMP_NANOS, REGION)

#: The table's schema as delta-rs is given it (its Delta types: timestamp, short, string, date).
TABLE_SCHEMA = pa.schema(
    [
        pa.field(TIMESTAMP, pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field(TIMESTAMP_NANOS, pa.int16(), nullable=False),
        *(pa.field(name, pa.string()) for name in DATA_COLUMNS[2:]),
        pa.field(APP, pa.string()),
        pa.field(DATE, pa.date32()),
    ]
)

#: The log's folder under the table root; every other top-level ``_`` folder is ignored by Delta.
LOG_PREFIX = "_delta_log/"
