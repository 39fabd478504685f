"""Row groups copied between Parquet files (archiver.codec.concat) and the footer codec under it (thrift_compact)."""

from __future__ import annotations

import struct
from pathlib import Path

import duckdb
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from test_codec import APP, REGION, realistic_payloads

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR
from archiver.archive.supersede import REPLACES_KEY, replaces_metadata
from archiver.archive.timestamps import table_ns
from archiver.codec.concat import concatenate, copyable, read_footer
from archiver.codec.encode import COMPACT_COMPRESSION_LEVEL, encode_partition
from archiver.codec.merge import FileMerge, MergeInput
from archiver.codec.payloads import Payloads
from archiver.codec.thrift_compact import read_struct, write_struct
from archiver.errors import EncodeError

HOUR = 1_795_000_000 // 3600 * 3600 * 1_000_000_000


def hour_files(tmp_path: Path, hours: int = 3, rows: int = 400) -> list[Path]:
    """One compacted-level file per hour, each of ``rows`` realistic messages inside its hour."""
    paths = []
    for h in range(hours):
        start = HOUR + h * NS_PER_HOUR
        payloads = realistic_payloads(rows, start_ns=start)  # ~10 s of messages from the hour's start
        [encoded] = encode_partition(APP, REGION, Payloads(payloads), start, COMPACT_COMPRESSION_LEVEL).files
        path = tmp_path / f"hour-{h}.parquet"
        path.write_bytes(encoded.data)
        paths.append(path)
    return paths


def footer_bytes(data: bytes) -> bytes:
    length = struct.unpack("<I", data[-8:-4])[0]
    return data[-8 - length : -8]


def test_footers_read_and_written_back_byte_for_byte(tmp_path: Path) -> None:
    """Live files, and a merged part of several row groups with key-value metadata, round-trip exactly."""
    files = hour_files(tmp_path)
    merged = tmp_path / "merged.parquet"
    merge = FileMerge(
        [MergeInput(str(p)) for p in files], replaces_metadata(["a", "b"]), align_ns=NS_PER_HOUR
    )
    assert merge.write_parts([str(merged)]) is not None
    for path in [*files, merged]:
        footer = footer_bytes(path.read_bytes())
        parsed, used = read_struct(footer)
        assert used == len(footer) and write_struct(parsed) == footer
    with pytest.raises(EncodeError):
        read_struct(footer_bytes(merged.read_bytes())[:-40])


def test_copied_file_holds_the_inputs_rows_and_row_groups_in_order(tmp_path: Path) -> None:
    """Every engine reads the inputs' rows in order; statistics, metadata and the Arrow schema's copy are right."""
    files = hour_files(tmp_path)
    out = tmp_path / "day.parquet"
    metadata = replaces_metadata(["x.parquet"])
    assert concatenate([str(p) for p in files], str(out), metadata) == 1200
    inputs = [pq.read_table(p) for p in files]
    table = pq.read_table(out)
    assert table.equals(pa.concat_tables(inputs).replace_schema_metadata(table.schema.metadata))
    footer = pq.read_metadata(out)
    assert footer.num_row_groups == 3 and footer.num_rows == 1200
    assert footer.metadata[REPLACES_KEY] == metadata[REPLACES_KEY]
    assert table.schema.metadata[REPLACES_KEY] == metadata[REPLACES_KEY]  # the stored Arrow schema's copy
    assert table.schema.metadata[schema.SCHEMA_VERSION_KEY] == schema.SCHEMA_VERSION.encode()
    for i, path in enumerate(files):
        original = pq.read_metadata(path).row_group(0)
        copied = footer.row_group(i)
        for c in range(copied.num_columns):
            assert copied.column(c).statistics == original.column(c).statistics
    # Each row group is one hour: a reader of one hour decodes its own.
    for i in range(3):
        stamps = table_ns(pq.ParquetFile(out).read_row_group(i)).to_pylist()
        assert {(s - HOUR) // NS_PER_HOUR for s in stamps} == {i}
    expected = table_ns(table).to_pylist()
    assert duckdb.sql(f"SELECT epoch_us(timestamp) FROM '{out}'").fetchall() == [
        (s // 1000,) for s in expected
    ]
    assert pl.read_parquet(out)["message"].to_list() == table["message"].to_pylist()
    context = SessionContext()
    context.register_parquet("day", str(out))
    assert context.sql("SELECT count(*) AS n FROM day").to_pydict()["n"] == [1200]


def test_files_of_another_shape_are_not_copied(tmp_path: Path) -> None:
    """A different schema, or a page index (absolute offsets inside the copied bytes): refused."""
    files = [str(p) for p in hour_files(tmp_path, hours=2)]
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"timestamp": pa.array([HOUR], pa.timestamp("us", "UTC"))}), other)
    indexed = tmp_path / "indexed.parquet"
    pq.write_table(pq.read_table(files[0]), indexed, write_page_index=True)
    assert copyable([read_footer(p)[0] for p in files])
    for odd in (other, indexed):
        assert not copyable([read_footer(p)[0] for p in [*files, str(odd)]])
        with pytest.raises(EncodeError):
            concatenate([*files, str(odd)], str(tmp_path / "out.parquet"), {})
    (tmp_path / "short.parquet").write_bytes(b"PAR1")
    with pytest.raises(EncodeError):
        read_footer(str(tmp_path / "short.parquet"))
