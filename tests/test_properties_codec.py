"""Property tests of message decoding: any payload gives exactly one row, and the row gives the payload back.

Payloads are Fly-shaped messages with random field values and types, unicode,
timestamps (canonical, lenient, absurd, not strings), extra fields and nesting;
the same serialised with other spacing or key order; byte-level mutations of
them (truncated JSON, NUL bytes, invalid UTF-8); truncated forms; arbitrary
bytes. Batches mix them with good messages, so the bulk reader, its halving
and the exact path all run. ``./dev fuzz tests/test_properties_codec.py``
runs these with ``FUZZ_EXAMPLES`` examples each.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from archiver.archive import schema
from archiver.archive.message import (
    format_timestamp_ns,
    parse_timestamp,
    rebuild_message,
    rebuild_payload,
    split_truncated,
    truncate_payload,
)
from archiver.archive.timestamps import exact_rows
from archiver.codec.parse import parse_batch
from archiver.codec.parse_exact import MIN_TIMESTAMP_NS, exact_table, newest_accepted_ns
from archiver.codec.payloads import Payloads
from archiver.demo.flymessage import fly_record

pytestmark = pytest.mark.fuzz
# Generating these payloads costs ~50 ms an example: the suite runs fewer than the "ci" profile's 200.
QUICK = settings() if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else settings(max_examples=40)

APP, REGION = "web", "ord"
RECEIVED = 1_795_000_000_123_456_789  # 2026-11-18
NEWEST = newest_accepted_ns(RECEIVED)
_INT64 = 2**63 - 1

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=30),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
text_or_any = st.one_of(
    st.text(max_size=60), st.text(alphabet='ab{}"\\: \n\t\x00é😀', max_size=20), json_value
)
canonical_ts = st.integers(min_value=-(2**63), max_value=_INT64).map(format_timestamp_ns)
near_ts = st.integers(min_value=RECEIVED - 10**18, max_value=RECEIVED + 2 * 86400 * 10**9).map(
    format_timestamp_ns
)
lenient_ts = st.builds(
    lambda y, mo, d, h, mi, s, frac, sep, zone: f"{y:04d}-{mo:02d}-{d:02d}{sep}{h:02d}:{mi:02d}:{s:02d}{frac}{zone}",
    st.integers(0, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
    st.integers(0, 61), st.sampled_from(["", ".5", ".123456789", ".1234567891234", "."]),
    st.sampled_from(["T", "t", " ", "x"]), st.sampled_from(["Z", "z", "", "+01:00", "-0530", "+2400", "Q"]),
)  # fmt: skip
timestamp = st.one_of(
    near_ts, near_ts, canonical_ts, lenient_ts, st.text(max_size=30), json_value, st.just("yesterday")
)
maybe = st.booleans()


@st.composite
def fly_objects(draw: st.DrawFn) -> dict[str, Any]:
    """A Fly-shaped message: each known field usually a string, sometimes absent or of another type."""

    def field(value: st.SearchStrategy[Any]) -> Any:
        return draw(st.one_of(st.just(_ABSENT), value)) if draw(st.integers(0, 4)) == 0 else draw(value)

    strings = st.text(max_size=40)
    obj: dict[str, Any] = {}
    provider = field(st.one_of(strings, json_value) if draw(maybe) else st.just("app"))
    if provider is not _ABSENT:
        obj["event"] = {"provider": provider}
    app_obj: dict[str, Any] = {}
    for key, value in (
        ("instance", field(strings)),
        ("name", field(st.sampled_from([APP, APP, "other", ""]) | json_value)),
    ):
        if value is not _ABSENT:
            app_obj[key] = value
    fly = {"app": app_obj, "region": field(st.sampled_from([REGION, REGION, "syd"]) | json_value)}
    obj["fly"] = {k: v for k, v in fly.items() if v is not _ABSENT}
    for key, value in (("host", field(strings)), ("log", field(st.builds(lambda lv: {"level": lv}, strings | json_value))),
                       ("message", field(text_or_any)), ("timestamp", field(timestamp))):  # fmt: skip
        if value is not _ABSENT:
            obj[key] = value
    if draw(st.integers(0, 3)) == 0:  # unknown fields, top level and nested
        obj.update(draw(st.dictionaries(st.text(max_size=10), json_value, max_size=3)))
        if isinstance(obj.get("fly"), dict):
            obj["fly"].update(draw(st.dictionaries(st.text(max_size=6), json_value, max_size=2)))
    if draw(st.integers(0, 3)) == 0:  # other key order
        keys = draw(st.permutations(list(obj)))
        obj = {k: obj[k] for k in keys}
    return obj


_ABSENT: Any = object()


@st.composite
def serialised(draw: st.DrawFn, objects: st.SearchStrategy[Any]) -> bytes:
    """An object as compact JSON (mostly), or with other spacing, indentation or ASCII escapes."""
    obj = draw(objects)
    style = draw(st.integers(0, 5))
    if style == 0:
        return json.dumps(obj, ensure_ascii=draw(maybe)).encode()
    if style == 1:
        return json.dumps(
            obj, indent=draw(st.sampled_from([None, 1, "\t"])), separators=(", ", ": ")
        ).encode()
    return orjson.dumps(obj)


@st.composite
def mutated(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """A payload with a few bytes replaced, inserted or cut (truncated JSON, NUL, invalid UTF-8)."""
    data = bytearray(draw(payloads))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        op = draw(st.integers(0, 3))
        if op == 0:
            del data[at:]
        elif op == 1:
            data[at:at] = draw(st.binary(min_size=1, max_size=3))
        elif op == 2 and at < len(data):
            data[at] = draw(st.sampled_from([0, 0xFF, 0x80, 0x22, 0x5C, 0x0A, 0x7B, 0x7D]))
        else:
            data[at:at] = draw(
                st.sampled_from([b"\x00", b'"', b"\\", b"\\u0000", b"\\ud800", b"\n", b"{}", b","])
            )
    return bytes(data)


@st.composite
def truncated_forms(draw: st.DrawFn, payloads: st.SearchStrategy[bytes]) -> bytes:
    """What the hot path stores for a payload over MAX_MESSAGE_BYTES."""
    payload = draw(payloads.filter(lambda p: len(p) > 1))
    return truncate_payload(payload, draw(st.integers(1, len(payload) - 1)))


fly_payloads = serialised(fly_objects())
any_json_payloads = serialised(json_value)
payloads = st.one_of(
    fly_payloads,
    fly_payloads,
    any_json_payloads,
    mutated(fly_payloads),
    truncated_forms(fly_payloads | st.binary(min_size=2, max_size=200)),
    st.binary(max_size=200),
    st.sampled_from([b"", b" ", b"\x00", b"null", b"[]", b"{}", b"42", b'"s"', b"\xff"]),
)


def good(i: int) -> bytes:
    return orjson.dumps(
        fly_record(APP, REGION, f"good {i}", format_timestamp_ns(RECEIVED - i), instance="i1", host="h")
    )


FILLER = [good(i) for i in range(200)]


def expected_key(payload: bytes) -> tuple[str, bytes]:
    """An independent oracle: what the row of ``payload`` must rebuild to."""
    split = split_truncated(payload)
    if split is not None:
        return "raw", split[1]
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return "raw", payload
    if not isinstance(obj, dict) or schema.MALFORMED_MARK in obj:
        return "raw", payload
    text = obj.get("timestamp")
    ns = parse_timestamp(text) if isinstance(text, str) else None
    if ns is None or not MIN_TIMESTAMP_NS <= ns <= NEWEST:
        return "raw", payload
    # The documented exception (archiver.codec.parse): a null fly.app.name / fly.region rebuilds as absent.
    fly = obj.get("fly")
    if isinstance(fly, dict):
        if fly.get("region", 0) is None:
            del fly["region"]
        app = fly.get("app")
        if isinstance(app, dict) and app.get("name", 0) is None:
            del app["name"]
    return "json", orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def row_key(row: dict[str, Any]) -> tuple[str, bytes]:
    """What a row rebuilds to, checking the row's own invariants on the way."""
    extra = orjson.loads(row["extra"]) if row["extra"] is not None else None
    assert row["timestamp"] is not None
    if isinstance(extra, dict) and extra.get(schema.MALFORMED_MARK) is True:
        assert row["timestamp"] == RECEIVED
        assert row["extra"].startswith('{"_malformed":true')
        return "raw", rebuild_payload(row, APP, REGION)
    assert MIN_TIMESTAMP_NS <= row["timestamp"] <= NEWEST
    message = rebuild_message(row, APP, REGION)
    assert orjson.loads(rebuild_payload(row, APP, REGION)) == message
    return "json", orjson.dumps(message, option=orjson.OPT_SORT_KEYS)


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """Rows with the exact time as int nanoseconds; every row's region is the batch's."""
    assert set(table[schema.REGION].to_pylist()) <= {REGION}
    return exact_rows(table)


def check_batch(batch: list[bytes]) -> None:
    result = parse_batch(APP, REGION, Payloads(batch), RECEIVED, NEWEST)
    assert result.table.num_rows == len(batch)
    rows = rows_of(result.table)
    assert Counter(row_key(row) for row in rows) == Counter(expected_key(p) for p in batch)
    malformed = sum(1 for p in batch if expected_key(p)[0] == "raw")
    assert result.malformed == malformed == sum(result.malformed_kinds.values())
    assert set(result.malformed_kinds) <= set(schema.MALFORMED_KINDS)
    # The bulk path and the exact path agree row for row.
    exact = rows_of(exact_table(batch, APP, REGION, RECEIVED, NEWEST).table)
    assert sorted(map(repr, rows)) == sorted(map(repr, exact))
    # A batch gathered one payload at a time and handed over (as a partition buffer does) parses alike.
    gathered = Payloads()
    for payload in batch:
        gathered.append(payload)
    stored = parse_batch(APP, REGION, gathered.take(), RECEIVED, NEWEST)
    assert stored.table.equals(result.table) and stored.malformed_kinds == result.malformed_kinds


@QUICK
@given(st.lists(payloads, max_size=12), st.integers(0, 150))
def test_any_batch_round_trips(hostile: list[bytes], filler: int) -> None:
    """Mixed with good messages: one row each, never raises, each row gives its payload back."""
    batch = FILLER[:filler] + hostile + FILLER[filler : filler + 60]
    check_batch(batch)


@QUICK
@given(st.lists(fly_payloads, min_size=1, max_size=80))
def test_fly_shaped_batches_round_trip(batch: list[bytes]) -> None:
    """Fly-shaped messages only: most go through the bulk reader whole."""
    check_batch(batch)


@given(payloads)
def test_one_payload_round_trips(payload: bytes) -> None:
    check_batch([payload])
