"""query.kernels gives what pyarrow.compute gives, and a query process never imports pyarrow.compute."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.archive.layout import object_key, object_name
from archiver.codec.encode import encode_partition
from archiver.codec.payloads import Payloads
from archiver.demo.flymessage import fly_message
from query import kernels
from query.format import timestamp_text

INT64 = st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1)
EDGES = [0, 1, -1, 10**9, -(10**9), 1_795_542_000_000_000_000, 253_402_300_799_999_999_999 // 1000, 2**63 - 1]


def test_timestamp_text_edges_match_strftime() -> None:
    column = pa.array([*EDGES, None], pa.timestamp("ns", tz="UTC"))
    expected = pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ")
    assert timestamp_text(column).equals(expected)
    chunked = pa.chunked_array([column.slice(0, 3), column.slice(3)])
    assert timestamp_text(chunked).equals(pc.strftime(chunked, format="%Y-%m-%dT%H:%M:%SZ"))
    assert timestamp_text(column)[5].as_py() == "2026-11-24T17:40:00.000000000Z"


@pytest.mark.fuzz
@given(st.lists(st.one_of(INT64, st.none()), max_size=50))
def test_timestamp_text_matches_strftime(values: list[int | None]) -> None:
    column = pa.array(values, pa.timestamp("ns", tz="UTC"))
    assert timestamp_text(column).equals(pc.strftime(column, format="%Y-%m-%dT%H:%M:%SZ"))


def test_kernels_match_pyarrow_compute() -> None:
    table = pa.table({"t": pa.array([3, 1, 2, 1], pa.int64()), "s": ["b", None, "A", "a"]})
    mask = pa.array([True, None, False, True])
    assert kernels.filter(table, mask).equals(table.filter(mask))
    order = kernels.sort_indices(table, sort_keys=[("t", "ascending")])
    assert order.equals(pc.sort_indices(table, sort_keys=[("t", "ascending")]))
    assert kernels.take(table, order).equals(table.take(order))
    assert kernels.cast(table["t"], pa.int32()).equals(table["t"].cast(pa.int32()))
    with pytest.raises(pa.ArrowInvalid):
        kernels.cast(pa.array([2**40]), pa.int32())  # safe, like Array.cast
    lowered = kernels.utf8_lower(table["s"])
    assert kernels.is_in(lowered, pa.array(["a"])).equals(pc.is_in(lowered, value_set=pa.array(["a"])))
    regex = kernels.match_substring_regex(table["s"], "a", ignore_case=True)
    assert regex.equals(pc.match_substring_regex(table["s"], "a", ignore_case=True))
    joined = kernels.binary_join_element_wise(table["s"], "-", table["s"], "")
    assert joined.equals(
        pc.binary_join_element_wise(table["s"], "-", table["s"], "", null_handling="replace")
    )
    nulls = kernels.binary_join_element_wise(table["s"], "-", "", null_replacement=None)
    assert nulls.equals(pc.binary_join_element_wise(table["s"], "-", ""))
    assert kernels.any(mask).as_py() is True and kernels.all(mask).as_py() is False
    ends, values = pa.array([2, 5], pa.int32()), pa.array(["x", "y"])
    ree = pa.RunEndEncodedArray.from_arrays(ends, values)
    assert kernels.run_end_decode(ree).equals(pc.run_end_decode(ree))
    conformed = kernels.conform(table, pa.schema([("t", pa.int32()), pa.field("s", pa.string())]))
    assert conformed.equals(table.cast(pa.schema([("t", pa.int32()), pa.field("s", pa.string())])))


def test_a_query_process_does_not_import_pyarrow_compute(tmp_path: Path) -> None:
    hour = 1_795_539_600 * 10**9  # 2026-11-24T17:00Z
    payloads = [
        fly_message("web", "ams", f"hello {n}", f"2026-11-24T17:0{n}:00Z", instance="i1") for n in range(3)
    ]
    for f in encode_partition("web", "ams", Payloads(payloads), hour).files:
        path = tmp_path / object_key("web", f.hour_ns, object_name(f.min_timestamp_ns, "t", 1))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f.data)
    program = (
        "import sys\nfrom archiver.cli.main import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('pyarrow.compute' in sys.modules, file=sys.stderr)\n"
    )
    for fmt in ("text", "json", "csv"):
        argv = [
            "query",
            "--archive",
            str(tmp_path),
            "--since",
            "2026-11-24T17:00",
            "--until",
            "2026-11-24T18:00",
        ]
        argv += ["--format", fmt]
        done = subprocess.run(
            [sys.executable, "-c", program, *argv], capture_output=True, text=True, check=True, timeout=60
        )
        assert done.stdout.count("hello") == 3, done.stderr
        assert done.stderr.strip().splitlines()[-1] == "False", f"{fmt}: pyarrow.compute was imported"
