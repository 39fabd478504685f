"""AddAction stats from a Parquet footer: exact, combined over row groups, and absent when unknown."""

from __future__ import annotations

import datetime as dt
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from table_files import FILE_SCHEMA, v1_bytes, v2_bytes

from archiver.errors import TableError
from archiver.table.stats import MAX_EXACT_STRING_BYTES, file_stats, iso_microseconds

START = dt.datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=dt.UTC)


def stats_of(data: bytes) -> dict:
    return json.loads(file_stats(pq.read_metadata(io.BytesIO(data))))


def write(table: pa.Table, **options: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **options)
    return buf.getvalue()


def test_iso_microseconds() -> None:
    assert iso_microseconds(0) == "1970-01-01T00:00:00.000000Z"
    epoch_us = int(START.timestamp()) * 1_000_000 + START.microsecond
    assert iso_microseconds(epoch_us) == "2024-01-02T03:04:05.123456Z"


def test_stats_are_exact_over_row_groups() -> None:
    messages = [f"m{i}" for i in range(10)]
    table = pq.read_table(io.BytesIO(v2_bytes(messages, START)))
    regions = pa.array(["sjc", None, "ams", "fra", "ams", None, "cdg", "ams", "ams", "yyz"])
    table = table.set_column(table.schema.get_field_index("region"), "region", regions)
    stats = stats_of(write(table, row_group_size=3))  # four row groups
    assert stats["numRecords"] == 10
    assert stats["minValues"] == {
        "timestamp": "2024-01-02T03:04:05.123456Z",
        "timestamp_nanos": 0,
        "region": "ams",
    }
    # row i is START + i s + i µs: the last is 9.000009 s later
    assert stats["maxValues"] == {
        "timestamp": "2024-01-02T03:04:14.123465Z",
        "timestamp_nanos": 9,
        "region": "yyz",
    }
    assert stats["nullCount"]["region"] == 2
    assert stats["nullCount"]["timestamp"] == 0
    assert stats["nullCount"]["host"] == 10
    assert set(stats["nullCount"]) == {f.name for f in FILE_SCHEMA}


def test_an_all_null_row_group_keeps_the_others_bounds() -> None:
    table = pq.read_table(io.BytesIO(v2_bytes([f"m{i}" for i in range(4)], START)))
    table = table.set_column(2, "region", pa.array([None, None, "iad", "ams"]))
    stats = stats_of(write(table, row_group_size=2))
    assert stats["minValues"]["region"] == "ams"
    assert stats["maxValues"]["region"] == "iad"
    assert stats["nullCount"]["region"] == 2


def test_unknown_or_untrusted_values_are_left_out() -> None:
    table = pq.read_table(io.BytesIO(v2_bytes(["a", "b"], START)))
    no_stats = stats_of(write(table, write_statistics=False))
    assert no_stats == {"numRecords": 2, "minValues": {}, "maxValues": {}, "nullCount": {}}
    long = "r" * (MAX_EXACT_STRING_BYTES + 1)
    table = table.set_column(2, "region", pa.array([long, "ams"]))
    stats = stats_of(write(table))
    assert "region" not in stats["minValues"]
    assert "region" not in stats["maxValues"]
    assert stats["minValues"]["timestamp"] == "2024-01-02T03:04:05.123456Z"


def test_an_empty_file_has_zero_records() -> None:
    assert stats_of(v2_bytes([], START))["numRecords"] == 0


def test_a_v1_file_is_refused() -> None:
    with pytest.raises(TableError, match="not a schema v2 file"):
        stats_of(v1_bytes(["a"], START))
