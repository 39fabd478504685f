"""Parsing payloads into schema v2 rows, rebuilding them exactly, and the Parquet files written.

Realistic message text comes from the LogHub samples in /work/shared/corpus/loghub
when present (https://github.com/logpai/loghub; Jieming Zhu, Shilin He, Pinjia He,
Jinyang Liu, Michael R. Lyu. Loghub: A Large Collection of System Log Datasets for
AI-driven Log Analytics. In ISSRE, 2023). They are read at run time, not copied.
"""

from __future__ import annotations

import io
import random
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR, hour_start_ns
from archiver.archive.message import (
    format_timestamp_ns,
    parse_timestamp,
    rebuild_message,
    rebuild_payload,
    row_timestamp_ns,
    timestamp_ns,
)
from archiver.archive.timestamps import exact_rows, split_ns, table_ns
from archiver.codec import parse, parse_exact
from archiver.codec.encode import (
    COMPACT_COMPRESSION_LEVEL,
    LIVE_COMPRESSION_LEVEL,
    ROW_GROUP_SIZE,
    encode_partition,
    open_writer,
    split_hours,
    write_parquet,
    writer_options,
)
from archiver.codec.parse import parse_batch
from archiver.codec.payloads import Payloads
from archiver.demo.flymessage import fly_record
from archiver.errors import EncodeError

APP, REGION = "web", "ord"
RECEIVED = 1_800_000_000_123_456_789
TS = "2022-09-27T20:34:37.252022967Z"
TS_NS = 1664310877252022967
LOGHUB = sorted(Path("/work/shared/corpus/loghub").glob("*.log"))


def fly(message: str = "hello", timestamp: str = TS, **top: Any) -> dict[str, Any]:
    """A Fly message as the stream sends it, top-level keys overridden or added by ``top``."""
    return fly_record(APP, REGION, message, timestamp, **top)


def dumps(msg: Any) -> bytes:
    return orjson.dumps(msg)


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with exact integer-ns timestamps (to_pylist would give microsecond datetimes)."""
    return exact_rows(table)


def is_malformed(row: dict[str, Any]) -> bool:
    return row["extra"] is not None and orjson.loads(row["extra"]).get(schema.MALFORMED_MARK) is True


def canonical(value: Any) -> bytes:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def varied_payloads() -> tuple[list[bytes], list[bytes]]:
    """(valid payloads, malformed payloads) covering the corner cases of the format."""
    base = fly()
    nested_unknown = fly()
    nested_unknown["fly"]["app"]["machine"] = {"cpu": 2}
    nested_unknown["log"]["caller"] = "main.go:12"
    no_fly = fly()
    del no_fly["fly"]
    no_name = fly()
    del no_name["fly"]["app"]["name"]
    empty_log = fly(log={})
    wrong_app = fly()
    wrong_app["fly"]["app"]["name"] = "other-app"
    wrong_region = fly()
    wrong_region["fly"]["region"] = "syd"
    valid = [
        base,
        fly('plain text with "quotes", tabs\t, unicode é 😀 and \u0000'),
        fly('{"level":"WARN","msg":"x"}'),
        fly('  {"severity":"Error","msg":"x"}'),
        fly('{"lvl":"debug"}'),
        fly('{"level":30,"msg":"pino"}'),
        fly('{"level":true,"severity":"notice"}'),
        fly('{"level":35}'),
        fly('{"level":"warn"'),  # not JSON after all
        fly("[1,2]"),
        fly(trace_id="abc", count=3, nested={"a": [1, {"b": None}]}, nothing=None),
        nested_unknown,
        fly(host=42),
        fly(message={"structured": True}),
        fly(event={"provider": None}),
        fly(event="not an object"),
        fly(timestamp="2022-09-27T20:34:37Z"),
        fly(timestamp="2022-09-27T20:34:37.25Z"),
        fly(timestamp="2022-09-27T22:34:37.252022967+02:00"),
        fly(timestamp="2022-09-27 20:34:37.252022967z"),
        fly(timestamp="2022-09-27T20:34:37.2520229671234Z"),
        fly(timestamp="2022-09-27T20:34:37.252022967"),
        {"message": "only a message", "timestamp": TS},
        {"timestamp": TS},
        no_fly,
        no_name,
        empty_log,
        wrong_app,
        wrong_region,
        fly(host=None),
        {"timestamp": TS, **{k: v for k, v in fly().items() if k != "timestamp"}},  # other key order
        fly(extra="a key named like the column"),
    ]
    malformed = [
        b"not json at all",
        b"",
        b"   ",
        b"[1, 2, 3]",
        b'"a string"',
        b"42",
        dumps({"message": "no timestamp"}),
        dumps(fly(timestamp=12345)),
        dumps(fly(timestamp="yesterday")),
        dumps(fly(timestamp="2022-02-30T00:00:00.000000000Z")),
        dumps(fly(timestamp="2400-01-01T00:00:00.000000000Z")),
        dumps(fly(_malformed=True)),
        b'{"message":"bad utf-8 \xff\xfe","timestamp":"' + TS.encode() + b'"}',
        b"\xff\xfe\x00binary",
        b'{"message":"x",',
        b'{"timestamp":"' + TS.encode() + b'","deep":' + b"[" * 300 + b"]" * 300 + b"}",  # too deep for dumps
        b"[" * 2000 + b"]" * 2000,  # too deep for loads
        b'{"message":"\\ud800","timestamp":"' + TS.encode() + b'"}',  # lone surrogate
    ]
    payloads = [dumps(m) for m in valid]
    payloads.append(b'{\n  "message": "pretty",\n  "timestamp": "' + TS.encode() + b'"\n}')  # newline inside
    payloads.append(b'  {"message":"leading space","timestamp":"' + TS.encode() + b'"}')
    payloads.append(dumps(fly("dup")).replace(b'"host":"0ad1"', b'"host":"one","host":"two"'))
    return payloads, malformed


def rebuilt(table: pa.Table) -> Counter[bytes]:
    out: Counter[bytes] = Counter()
    for row in rows(table):
        if is_malformed(row):
            out[b"raw:" + rebuild_payload(row, APP, REGION)] += 1
        else:
            out[b"json:" + canonical(rebuild_message(row, APP, REGION))] += 1
    return out


def expected(valid: list[bytes], malformed: list[bytes]) -> Counter[bytes]:
    out: Counter[bytes] = Counter(b"json:" + canonical(orjson.loads(p)) for p in valid)
    out.update(b"raw:" + p for p in malformed)
    return out


def test_round_trip_varied_payloads() -> None:
    valid, malformed = varied_payloads()
    # Surround the odd ones with plain messages so both the bulk path and its halving run.
    filler = [dumps(fly(f"filler {i}")) for i in range(300)]
    payloads = filler[:150] + valid + malformed + filler[150:]
    result = parse_batch(APP, REGION, Payloads(payloads), RECEIVED)
    assert result.table.schema.equals(schema.FILE_SCHEMA, check_metadata=True)
    assert result.table.num_rows == len(payloads)
    assert result.malformed == len(malformed)
    assert rebuilt(result.table) == expected(filler + valid, malformed)
    for row in rows(result.table):
        if is_malformed(row):
            assert row["timestamp"] == RECEIVED
            assert row["level"] is None and row["instance"] is None


def test_each_payload_alone_and_all_at_once_agree() -> None:
    valid, malformed = varied_payloads()
    together = parse_batch(APP, REGION, Payloads(valid + malformed), RECEIVED).table
    alone = pa.concat_tables(
        parse_batch(APP, REGION, Payloads([p]), RECEIVED).table for p in valid + malformed
    )
    assert sorted(map(canonical, rows(together))) == sorted(map(canonical, rows(alone)))


def test_malformed_rows_keep_the_payload() -> None:
    by_message = {
        r["message"]: r for r in rows(parse_batch(APP, REGION, Payloads([b"oops", b"\xffz"]), RECEIVED).table)
    }
    assert orjson.loads(by_message["oops"]["extra"]) == {"_malformed": True}
    bad = by_message["\ufffdz"]
    assert orjson.loads(bad["extra"]) == {"_malformed": True, "_raw_base64": "/3o="}
    assert rebuild_payload(bad, APP, REGION) == b"\xffz"
    assert rebuild_message(by_message["oops"], APP, REGION) == "oops"


def test_fast_and_exact_paths_make_the_same_rows() -> None:
    payloads = [dumps(fly(f"line {i}", format_timestamp_ns(TS_NS + i * 997))) for i in range(200)]
    payloads += [dumps(fly('{"level":"ERROR"}')), dumps(fly('\t{"severity":50}')), dumps(fly('{"lvl":60}'))]
    fast = parse_batch(APP, REGION, Payloads(payloads), RECEIVED).table
    exact, malformed = parse_exact.exact_rows(payloads, APP, REGION, RECEIVED)
    assert malformed == 0
    assert rows(fast.sort_by("timestamp")) == rows(exact.sort_by("timestamp"))


@pytest.mark.parametrize(
    ("message", "level"),  # level None: the app has none, so log.level verbatim
    [
        ("plain", None),
        ('{"level":"WARN"}', "warn"),
        (' \n{"severity":"Error","level":null}', "error"),
        ('{"lvl":"Debug"}', "debug"),
        ('{"level":10}', "trace"),
        ('{"level":20}', "debug"),
        ('{"level":30}', "info"),
        ('{"level":40}', "warn"),
        ('{"level":50}', "error"),
        ('{"level":60}', "fatal"),
        ('{"level":35}', None),
        ('{"level":30.0}', None),
        ('{"level":true}', None),
        ('{"level":""}', None),
        ('{"msg":{"level":"error"}}', None),  # nested: not the app's top-level level
        ('{"level":"error"', None),
        ('["level"]', None),
        ('x {"level":"error"}', None),
        ('{"severity":"CRITICAL","level":"warning"}', "warning"),
        ('{"level":30,"severity":"error"}', "info"),
    ],
)
def test_levels(message: str, level: str | None) -> None:
    for fly_level in ("info", "INFO"):
        msg = fly(message, log={"level": fly_level})
        # In a clean batch (bulk path) and with an unknown field (exact path).
        for payload in (dumps(msg), dumps({**msg, "unknown": 1})):
            (row,) = rows(parse_batch(APP, REGION, Payloads([payload]), RECEIVED).table)
            assert row["fly_level"] == fly_level
            assert row["level"] == (level or fly_level)


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        (TS, TS_NS),
        ("2022-09-27T20:34:37Z", 1664310877_000000000),
        ("2022-09-27T20:34:37.25Z", 1664310877_250000000),
        ("2022-09-27T22:34:37.252022967+02:00", TS_NS),
        ("2022-09-27T19:34:37.252022967-0100", TS_NS),
        ("2022-09-27 20:34:37.252022967z", TS_NS),
        ("2022-09-27T20:34:37.2520229679Z", TS_NS),
        ("1969-12-31T23:59:59.999999999Z", -1),
        ("2262-04-11T23:47:16.854775807Z", 2**63 - 1),
    ],
)
def test_timestamps_to_the_nanosecond(text: str, ns: int) -> None:
    assert parse_timestamp(text) == ns
    (row,) = rows(parse_batch(APP, REGION, Payloads([dumps(fly(timestamp=text))]), RECEIVED).table)
    if ns < parse_exact.MIN_TIMESTAMP_NS:  # parsed exactly, but before the accepted window
        assert is_malformed(row) and row["timestamp"] == RECEIVED
        assert rebuild_payload(row, APP, REGION) == dumps(fly(timestamp=text))
        return
    assert row["timestamp"] == ns
    assert rebuild_message(row, APP, REGION)["timestamp"] == text


@pytest.mark.parametrize(
    "text",
    ["2022-09-27", "2022-02-29T00:00:00Z", "2022-09-27T24:00:00Z", "2016-12-31T23:59:60Z", "x2022-09-27T20:34:37Z",
     "2022-09-27T20:34:37.Z", "2262-04-11T23:47:16.854775808Z", "٢٠٢٢-09-27T20:34:37Z"],
)  # fmt: skip
def test_unparseable_timestamps(text: str) -> None:
    assert parse_timestamp(text) is None


def test_arrow_cast_refuses_out_of_range_fields() -> None:
    # The bulk path relies on this instead of formatting every timestamp back (see parse.py).
    for text in ["2022-09-27T24:00:00.000000000Z", "2022-09-27T23:60:00.000000000Z", "2022-04-31T00:00:00.000000000Z",
                 "2016-12-31T23:59:60.000000000Z", "2021-02-29T00:00:00.000000000Z", "2262-04-11T23:47:16.854775808Z"]:  # fmt: skip
        with pytest.raises(pa.ArrowInvalid):
            pc.cast(pa.array([text]), schema.NS_TIMESTAMP_TYPE)


def test_format_timestamp() -> None:
    assert format_timestamp_ns(TS_NS) == TS
    assert format_timestamp_ns(0) == "1970-01-01T00:00:00.000000000Z"
    assert format_timestamp_ns(-1) == "1969-12-31T23:59:59.999999999Z"
    rnd = random.Random(5)
    for _ in range(1000):
        ns = rnd.randrange(-(2**63), 2**63)
        assert parse_timestamp(format_timestamp_ns(ns)) == ns


def test_rebuild_accepts_datetimes_and_scalars() -> None:
    (row,) = parse_batch(APP, REGION, Payloads([dumps(fly(timestamp=TS))]), 0).table.to_pylist()
    assert isinstance(row["timestamp"], datetime) and row["timestamp_nanos"] == 967
    assert rebuild_message(row, APP, REGION) == fly(timestamp=TS)  # the datetime plus timestamp_nanos
    assert row_timestamp_ns(row) == TS_NS
    naive = row["timestamp"].astimezone(UTC).replace(tzinfo=None)
    assert timestamp_ns(naive) == timestamp_ns(row["timestamp"]) == 1664310877252022000
    assert timestamp_ns(pa.scalar(TS_NS, schema.NS_TIMESTAMP_TYPE)) == TS_NS
    assert timestamp_ns(pa.scalar(TS_NS // 1000, schema.TIMESTAMP_TYPE)) == TS_NS // 1000 * 1000


def loghub_lines(limit: int) -> list[str]:
    lines: list[str] = []
    for path in LOGHUB:
        lines += path.read_text(encoding="utf-8", errors="replace").splitlines()
    return (lines * (limit // max(len(lines), 1) + 1))[:limit]


def realistic_payloads(count: int, start_ns: int = TS_NS) -> list[bytes]:
    rnd = random.Random(7)
    lines = (
        loghub_lines(count) if LOGHUB else [f"GET /item/{i} 200 {rnd.random():.4f}s" for i in range(count)]
    )
    out = []
    ts = start_ns
    for i, line in enumerate(lines):
        ts += rnd.randrange(1, 50_000_000)
        text = line if i % 5 else orjson.dumps({"level": rnd.choice(["info", "warn"]), "msg": line}).decode()
        msg = fly(text, format_timestamp_ns(ts))
        msg["fly"]["app"]["instance"] = rnd.choice(["0e286551c30586", "148ed726c12358"])
        out.append(dumps(msg))
    return out


def test_realistic_batch_takes_the_bulk_path(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = realistic_payloads(20_000)
    calls: list[int] = []
    original = parse_exact.exact_row
    monkeypatch.setattr(parse_exact, "exact_row", lambda *a: calls.append(1) or original(*a))
    start = time.perf_counter()
    result = parse_batch(APP, REGION, Payloads(payloads), RECEIVED)
    elapsed = time.perf_counter() - start
    assert result.malformed == 0 and not calls
    assert result.table.num_rows == 20_000
    assert result.table.column("extra").null_count == 20_000
    # ~1.3 us a message on a 2-core machine; generous for loaded CI.
    assert elapsed / len(payloads) < 20e-6
    assert rebuilt(result.table) == expected(payloads, [])


def test_one_bad_payload_costs_a_small_range(monkeypatch: pytest.MonkeyPatch) -> None:
    payloads = realistic_payloads(10_000)
    payloads[6_000] = b"garbage"
    calls: list[int] = []
    original = parse_exact.exact_row
    monkeypatch.setattr(parse_exact, "exact_row", lambda *a: calls.append(1) or original(*a))
    result = parse_batch(APP, REGION, Payloads(payloads), RECEIVED)
    assert result.malformed == 1
    assert 1 <= len(calls) <= parse.MIN_BULK_ROWS
    assert rebuilt(result.table) == expected(payloads[:6_000] + payloads[6_001:], [b"garbage"])


def test_empty_batch() -> None:
    result = parse_batch(APP, REGION, Payloads(), RECEIVED)
    assert result.table.num_rows == 0 and result.table.schema.equals(schema.FILE_SCHEMA)
    batch = encode_partition(APP, REGION, Payloads(), RECEIVED)
    assert batch.files == [] and batch.malformed == 0 and batch.raw_bytes == 0


def test_split_hours_across_hour_and_day_boundaries() -> None:
    midnight = 1_700_006_400 * 10**9  # 2023-11-15T00:00:00Z
    assert hour_start_ns(midnight) == midnight
    stamps = [
        midnight + 1,
        midnight - 1,
        midnight,
        midnight + NS_PER_HOUR,
        midnight - 1,
        midnight + NS_PER_HOUR - 1,
    ]
    micros, nanos = split_ns(pa.array(stamps, pa.int64()))
    table = pa.Table.from_pydict(
        {
            "timestamp": micros,
            "timestamp_nanos": nanos,
            **{
                f.name: [None] * len(stamps)
                for f in schema.FILE_SCHEMA
                if f.name not in ("timestamp", "timestamp_nanos", "message")
            },
            "message": [str(i) for i in range(len(stamps))],
        }
    ).select(schema.FILE_SCHEMA.names)
    hours = split_hours(table)
    assert [h for h, _ in hours] == [midnight - NS_PER_HOUR, midnight, midnight + NS_PER_HOUR]
    # Equal timestamps keep arrival order (stable sort).
    assert [t.column("message").to_pylist() for _, t in hours] == [["1", "4"], ["2", "0", "5"], ["3"]]
    assert split_hours(table.take([2, 0]))[0][1].column("message").to_pylist() == ["2", "0"]
    assert split_hours(table.slice(0, 0)) == []


def test_written_parquet_files() -> None:
    start = 1_700_006_400 * 10**9 - 60 * 10**9  # a minute before midnight: two hours, two days
    payloads = [*realistic_payloads(3_000, start_ns=start), b"not json"]
    random.Random(3).shuffle(payloads)
    batch = encode_partition(APP, REGION, Payloads(payloads), RECEIVED)
    assert batch.malformed == 1
    assert batch.raw_bytes == sum(map(len, payloads))
    assert [f.hour_ns for f in batch.files] == sorted(f.hour_ns for f in batch.files)
    assert len(batch.files) == 3  # before midnight, after it, and RECEIVED's hour for the malformed row
    assert sum(f.rows for f in batch.files) == len(payloads)
    seen: Counter[bytes] = Counter()
    for f in batch.files:
        table = pq.read_table(io.BytesIO(f.data))
        assert table.schema.equals(schema.FILE_SCHEMA)
        meta = pq.read_metadata(io.BytesIO(f.data))
        assert meta.metadata[schema.SCHEMA_VERSION_KEY] == schema.SCHEMA_VERSION.encode()
        ts = table_ns(table).to_pylist()
        assert ts == sorted(ts) and (f.min_timestamp_ns, f.max_timestamp_ns) == (ts[0], ts[-1])
        assert set(table["region"].to_pylist()) == {REGION}
        assert {hour_start_ns(t) for t in ts} == {f.hour_ns} and f.rows == len(ts)
        group = meta.row_group(0)
        for i in range(meta.num_columns):
            column = group.column(i)
            assert column.compression == "ZSTD"
            dictionary = any("DICTIONARY" in e for e in column.encodings)
            assert dictionary == (column.path_in_schema in schema.DICTIONARY_COLUMNS), column.path_in_schema
        assert "DELTA_BINARY_PACKED" in group.column(0).encodings
        stats = group.column(0).statistics  # microseconds: what readers prune on
        assert stats.has_min_max and (stats.min_raw, stats.max_raw) == (ts[0] // 1000, ts[-1] // 1000)
        seen.update(rebuilt(table))
    assert seen == expected([p for p in payloads if p != b"not json"], [b"not json"])


def test_writer_options_are_shared() -> None:
    options = writer_options(LIVE_COMPRESSION_LEVEL)
    assert options["compression"] == "zstd" and options["compression_level"] == LIVE_COMPRESSION_LEVEL
    assert options["use_dictionary"] == list(schema.DICTIONARY_COLUMNS)
    assert options["column_encoding"] == {
        schema.TIMESTAMP: "DELTA_BINARY_PACKED",
        schema.TIMESTAMP_NANOS: "DELTA_BINARY_PACKED",
    }
    assert schema.TIMESTAMP in options["write_statistics"]
    table = parse_batch(APP, REGION, Payloads(realistic_payloads(100)), RECEIVED).table.sort_by("timestamp")
    sink = io.BytesIO()
    with open_writer(sink, COMPACT_COMPRESSION_LEVEL) as writer:
        writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
    meta = pq.read_metadata(io.BytesIO(sink.getvalue()))
    assert meta.metadata[schema.SCHEMA_VERSION_KEY] == schema.SCHEMA_VERSION.encode()
    assert (
        meta.row_group(0).column(0).encodings
        == pq.read_metadata(io.BytesIO(write_parquet(table))).row_group(0).column(0).encodings
    )
    assert pq.read_table(io.BytesIO(sink.getvalue())).equals(table)


def test_encode_errors_are_archiver_errors() -> None:
    with pytest.raises(EncodeError):
        write_parquet(pa.table({"timestamp": pa.array([1], pa.int64())}))


def test_a_field_in_every_payload_takes_the_exact_path() -> None:
    payloads = [p[:-1] + b',"new":{"k":"v"}}' for p in realistic_payloads(3_000)]
    result = parse_batch(APP, REGION, Payloads(payloads), RECEIVED)
    assert result.malformed == 0
    assert rebuilt(result.table) == expected(payloads, [])
