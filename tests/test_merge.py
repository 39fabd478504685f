"""The streaming merge: exactly the order of a stable sort of the concatenated inputs, in any batch size."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from archiver.archive import schema
from archiver.archive.timestamps import split_ns, table_ns, to_v2, with_exact_time
from archiver.codec import merge
from archiver.codec.encode import write_parquet
from archiver.codec.merge import FileMerge, MergeInput
from archiver.codec.merge_inputs import input_problem, time_bounds

S = 1_000_000_000
T0 = 1_795_000_000 * S


def table_of(stamps: list[int], tag: str, region: str | None = "ams") -> pa.Table:
    """Rows at the given exact times, each message naming its input and position."""
    micros, nanos = split_ns(pa.array(stamps, pa.int64()))
    n = len(stamps)
    columns: dict[str, pa.Array] = {
        schema.TIMESTAMP: micros,
        schema.TIMESTAMP_NANOS: nanos,
        schema.REGION: pa.array([region] * n, pa.string()),
    }
    for name in schema.FILE_SCHEMA.names[3:]:
        values = [f"{tag}-{i}" for i in range(n)] if name == schema.MESSAGE else [None] * n
        columns[name] = pa.array(values, pa.string())
    return pa.table(columns, schema=schema.FILE_SCHEMA)


def write_v1(path: Path, table: pa.Table) -> None:
    v1 = with_exact_time(table).select(list(schema.V1_COLUMNS))
    pq.write_table(v1, path, store_schema=True, row_group_size=50)


def inputs(tmp_path: Path, seed: int) -> tuple[list[MergeInput], pa.Table]:
    """Overlapping sorted inputs with repeated times, a v1 input and an unsorted one; and the expected rows."""
    rnd = random.Random(seed)
    items, tables = [], []
    for i in range(rnd.randrange(3, 9)):
        start = T0 + rnd.randrange(0, 3000) * S
        n = rnd.randrange(0, 900)
        stamps = sorted(
            start + rnd.randrange(0, 400) * (S // 7) + rnd.choice((0, 0, 1, 999)) for _ in range(n)
        )
        kind = rnd.choice(("v2", "v2", "v1", "unsorted"))
        table = table_of(stamps, f"in{i}", region=None if kind == "v1" else "ams")
        path = tmp_path / f"{seed}-{i}.parquet"
        if kind == "unsorted" and n > 1:
            table = table.take(pa.array(rnd.sample(range(n), n)))
        if kind == "v1":
            write_v1(path, table)
            items.append(MergeInput(str(path), "v1region"))
            table = to_v2(with_exact_time(table).select(list(schema.V1_COLUMNS)), "v1region")
        else:
            path.write_bytes(write_parquet(table))
            items.append(MergeInput(str(path)))
        tables.append(to_v2(table, None))
    whole = pa.concat_tables(tables)
    return items, whole.take(pa.compute.sort_indices(table_ns(whole)))


@pytest.mark.parametrize("seed", range(12))
def test_merge_is_the_stable_sort_of_the_inputs(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(seed)
    monkeypatch.setattr(merge, "BATCH_ROWS", rnd.choice((7, 64, 1000)))
    monkeypatch.setattr(merge, "MIN_BATCH_ROWS", 3)
    monkeypatch.setattr(merge, "OPEN_ROWS_BUDGET", rnd.choice((10, 200, 5000)))
    items, want = inputs(tmp_path, seed)
    merged = FileMerge(items, {b"k": b"v"})
    assert merged.rows == want.num_rows
    count = rnd.randrange(1, 4) if want.num_rows >= 3 else 1
    parts = merged.write_parts([str(tmp_path / f"out-{i}.parquet") for i in range(count)])
    assert parts is not None and len(parts) == count
    got = pa.concat_tables([pq.read_table(p.path) for p in parts])
    assert got.schema.metadata[b"k"] == b"v" and got.schema.metadata[schema.SCHEMA_VERSION_KEY] == b"2"
    assert got.select(want.column_names).equals(
        want.replace_schema_metadata(None).cast(got.schema.remove_metadata())
    )
    sizes = [p.rows for p in parts]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == want.num_rows
    assert all(p.metadata.num_rows == p.rows for p in parts)


def test_stop_abandons_the_merge(tmp_path: Path) -> None:
    items, _ = inputs(tmp_path, 3)
    stop = threading.Event()
    stop.set()
    assert FileMerge(items, {}, stop).write_parts([str(tmp_path / "out.parquet")]) is None


def test_time_bounds_and_input_problem(tmp_path: Path) -> None:
    path = tmp_path / "a.parquet"
    path.write_bytes(write_parquet(table_of([T0 + 5, T0 + 2 * S + 999], "a")))
    low, high = time_bounds(pq.read_metadata(path))
    assert low is not None and high is not None and low <= T0 + 5 and high >= T0 + 2 * S + 999
    assert input_problem(str(path)) is None
    other = tmp_path / "b.parquet"
    pq.write_table(pa.table({"x": [1]}), other)
    assert input_problem(str(other)) == "not an archive file (no timestamp column)"
    (tmp_path / "c.parquet").write_bytes(b"nope")
    assert input_problem(str(tmp_path / "c.parquet"))
