"""Files as schema v1 wrote them, for tests that check old archives stay readable.

Schema v1: ``timestamp`` in nanoseconds, no ``timestamp_nanos`` and no
``region`` column (the key's ``region=`` folder held it), version "1" in the
key-value metadata.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.timestamps import with_exact_time

V1_SCHEMA = pa.schema(
    [pa.field(schema.TIMESTAMP, schema.NS_TIMESTAMP_TYPE, nullable=False)]
    + [schema.FILE_SCHEMA.field(n) for n in schema.V1_COLUMNS[1:]],
    metadata={schema.SCHEMA_VERSION_KEY: b"1"},
)


def to_v1(data: bytes, metadata: dict[bytes, bytes] | None = None) -> bytes:
    """A v2 file as v1 wrote the same rows: nanosecond timestamps, no nanos or region column, version 1."""
    table = with_exact_time(pq.read_table(pa.BufferReader(data)))
    table = table.select(list(schema.V1_COLUMNS)).cast(V1_SCHEMA)
    if metadata:
        table = table.replace_schema_metadata({**(V1_SCHEMA.metadata or {}), **metadata})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, version="2.6", compression="zstd", store_schema=True)
    return bytes(sink.getvalue().to_pybytes())
