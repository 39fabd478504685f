"""Archive keys: partition values in one safe segment and back, long values shortened, keys and names."""

from __future__ import annotations

import pytest

from archiver.archive.layout import (
    NS_PER_HOUR,
    decode_value,
    encode_value,
    hour_start_ns,
    object_key,
    object_name,
    parse_key,
    partition_value,
)


@pytest.mark.parametrize(
    "value",
    [
        "sandwich",
        "",
        ".",
        "..",
        "a/b",
        "../../etc",
        "a=b",
        "100%",
        "~",
        "tab\there",
        "\x00",
        "über",
        ".x",
        "a..b",
    ],
)
def test_partition_values_round_trip_and_stay_in_one_segment(value: str) -> None:
    segment = encode_value(value)
    assert decode_value(segment) == value
    assert "/" not in segment and "=" not in segment and segment not in (".", "..", "")
    assert all(ord(c) >= 0x20 for c in segment)
    key = object_key(segment, encode_value(value), 0, "f.parquet")
    parsed = parse_key(key)
    assert parsed is not None and (parsed.app, parsed.region) == (value, value)


def test_plain_fly_names_unchanged_and_long_values_shortened() -> None:
    assert encode_value("my-app-42") == "my-app-42"
    long = partition_value("x" * 500)
    assert len(long) <= 128 and long.startswith("x" * 95 + "~") and long == encode_value("x" * 500)
    assert partition_value(None) == "unknown"


def test_keys_and_names() -> None:
    ts = 1_764_000_000_123_456_789  # 2025-11-24T16:00:00.123456789Z
    key = object_key("sandwich", "dfw", hour_start_ns(ts), object_name(ts, "abc123", 7))
    assert key == "app=sandwich/date=2025-11-24/hour=16/region=dfw/20251124T160000Z-abc123-00000007.parquet"
    parsed = parse_key(key)
    assert parsed is not None and parsed.hour_ns == hour_start_ns(ts) and parsed.hour_ns % NS_PER_HOUR == 0
    assert parse_key("app=x/date=2025-13-01/hour=01/region=y/f.parquet") is None
    assert parse_key("app=x/date=2025-01-01/hour=24/region=y/f.parquet") is None
    assert parse_key("other/file.parquet") is None
