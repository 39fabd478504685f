"""WHEN parsing for --since/--until: pure, with an injected now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from archiver.errors import UsageError
from archiver.timespec import parse_absolute_ns, parse_duration_ns, parse_when, resolve_range

S = 1_000_000_000
NOW = 1_795_000_000 * S + 123_456_789  # 2026-11-18T...Z, with a fraction


def utc_ns(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()) * S


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("90s", 90 * S),
        ("15m", 900 * S),
        ("1h", 3600 * S),
        ("2d", 2 * 86400 * S),
        ("1w", 7 * 86400 * S),
        ("500ms", S // 2),
        ("1h30m", 5400 * S),
        ("1.5h", 5400 * S),
        ("250ns", 250),
        (" 2H ", 7200 * S),
    ],
)
def test_durations_count_back_from_now(text: str, ns: int) -> None:
    assert parse_duration_ns(text) == ns
    assert parse_when(text, NOW) == NOW - ns


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("2026-11-24", utc_ns(2026, 11, 24)),
        ("2026-11-24T13:00", utc_ns(2026, 11, 24, 13)),
        ("2026-11-24 13:04", utc_ns(2026, 11, 24, 13, 4)),
        ("2026-11-24T13:04:05", utc_ns(2026, 11, 24, 13, 4, 5)),
        ("2026-11-24T13:04:05Z", utc_ns(2026, 11, 24, 13, 4, 5)),
        ("2026-11-24t13:04:05z", utc_ns(2026, 11, 24, 13, 4, 5)),
        ("2026-11-24T13:04:05.123456789Z", utc_ns(2026, 11, 24, 13, 4, 5) + 123_456_789),
        ("2026-11-24T13:04:05.000000001Z", utc_ns(2026, 11, 24, 13, 4, 5) + 1),
        ("2026-11-24T13:04:05.5Z", utc_ns(2026, 11, 24, 13, 4, 5) + S // 2),
        ("2026-11-24T13:00+02:00", utc_ns(2026, 11, 24, 11)),
        ("2026-11-24T13:00-0530", utc_ns(2026, 11, 24, 18, 30)),
        ("2026-11-24T01:00:00.000000001+03:00", utc_ns(2026, 11, 23, 22) + 1),
        ("2026-12-31T23:59:59.999999999Z", utc_ns(2027, 1, 1) - 1),
        ("1969-12-31T23:59:59.999999999Z", -1),
    ],
)
def test_absolute_times_are_exact_to_the_nanosecond(text: str, ns: int) -> None:
    assert parse_absolute_ns(text) == ns
    assert parse_when(text, NOW) == ns


@pytest.mark.parametrize(
    "text",
    ["", "yesterday", "1", "90", "1y", "-1h", "2026-13-01", "2026-02-30", "2026-11-24T25:00",
     "2026-11-24T13:61", "2026-11-24T13:00+25:00", "2026-11-24T13", "2026-11-24T13:00:00.1234567891Z",
     "24/11/2026", "1h 30m"],
)  # fmt: skip
def test_bad_when_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_when(text, NOW, option="--since")
    assert info.value.exit_code == 2
    message = str(info.value)
    assert message.startswith("--since: ") and "\n" not in message


def test_now_keyword() -> None:
    assert parse_when("now", NOW) == NOW


def test_resolve_range_defaults_and_order() -> None:
    assert resolve_range(None, None, NOW) == (NOW - 3600 * S, NOW)
    assert resolve_range("2d", "1d", NOW) == (NOW - 2 * 86400 * S, NOW - 86400 * S)
    day = utc_ns(2026, 11, 24)
    assert resolve_range("2026-11-24", "2026-11-25", NOW) == (day, day + 86400 * S)
    with pytest.raises(UsageError, match="--until"):
        resolve_range("2026-11-24", "2026-11-24", NOW)
    with pytest.raises(UsageError, match="must be after"):
        resolve_range("1h", "2h", NOW)
    with pytest.raises(UsageError, match="--until: "):
        resolve_range("1h", "soon", NOW)
