"""WHEN arguments of ``--since``/``--until``: durations back from now or absolute times (pure).

A duration is one or more ``<number><unit>`` parts (``90s``, ``15m``, ``1h30m``,
``2d``, ``1w``, ``500ms``) counted back from ``now``. An absolute time is RFC 3339
or a shortening of it (``2026-11-24``, ``2026-11-24T13:00``,
``2026-11-24 13:04:05.123456789+02:00``), UTC unless it carries an offset.
Everything is resolved to integer nanoseconds since the epoch, so fractions
down to the nanosecond are exact (floats would round them).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation

from archiver.errors import UsageError

NS_PER_SECOND = 1_000_000_000
_UNIT_NS = {
    "ns": 1,
    "us": 1_000,
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
    "d": 86400 * NS_PER_SECOND,
    "w": 7 * 86400 * NS_PER_SECOND,
}
#: Times must fit Arrow's timestamp[ns] (signed 64-bit): 1677-09-21 to 2262-04-11.
MIN_NS, MAX_NS = -(2**63), 2**63 - 1
# re.ASCII: \d would match any Unicode digit, which Decimal and strptime then treat inconsistently.
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|ms|s|m|h|d|w)", re.ASCII)
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h|d|w))+\Z", re.ASCII)
_ABSOLUTE = re.compile(
    r"(?P<date>\d{4}-\d{2}-\d{2})"
    r"(?:[Tt ](?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:[.,](?P<fraction>\d{1,9}))?)?"
    r"(?P<offset>[Zz]|[+-]\d{2}:?\d{2})?)?\Z",
    re.ASCII,
)
WHEN_HELP = (
    "a duration back from now such as 90s, 15m, 1h, 2d, 1w, "
    "or a time such as 2026-11-24, 2026-11-24T13:00, 2026-11-24T13:04:05.123456789Z, 2026-11-24T13:00+02:00"
)


def now_ns() -> int:
    """The current time in nanoseconds since the epoch."""
    return time.time_ns()


def parse_duration_ns(text: str) -> int | None:
    """Nanoseconds in a duration like ``90s`` or ``1h30m``; None when ``text`` is not one."""
    compact = text.strip().lower()
    if not _DURATION.match(compact):
        return None
    total = Decimal(0)
    for number, unit in _DURATION_PART.findall(compact):
        total += Decimal(number) * _UNIT_NS[unit]
    return int(total)


def _offset(text: str | None) -> timezone:
    if text is None or text in ("Z", "z"):
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes = int(digits[:2]), int(digits[2:])
    if hours > 23 or minutes > 59:
        raise ValueError(f"offset out of range: {text}")
    return timezone(sign * timedelta(hours=hours, minutes=minutes))


def parse_absolute_ns(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339-like time; None when ``text`` is not one.

    Raises ValueError for a well-formed time with an impossible value (month 13, hour 25).
    """
    match = _ABSOLUTE.match(text.strip())
    if match is None:
        return None
    day = datetime.strptime(match["date"], "%Y-%m-%d")
    hour, minute = int(match["hour"] or 0), int(match["minute"] or 0)
    second = int(match["second"] or 0)
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"time of day out of range: {text}")
    # A leap second (":60") is folded onto the next second, as every UTC clock here does.
    moment = day.replace(tzinfo=_offset(match["offset"])) + timedelta(
        hours=hour, minutes=minute, seconds=second
    )
    # Whole seconds through the calendar, fraction added as an integer: exact to the nanosecond.
    whole = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(seconds=1)
    fraction = int((match["fraction"] or "").ljust(9, "0"))
    return whole * NS_PER_SECOND + fraction


def parse_when(text: str, now: int, *, option: str = "WHEN") -> int:
    """Resolve a WHEN argument to nanoseconds since the epoch; UsageError when it is not one."""
    if text.strip().lower() == "now":
        return now
    try:
        duration = parse_duration_ns(text)
        if duration is not None:
            return _in_range(now - duration, text, option)
        absolute = parse_absolute_ns(text)
    except (ValueError, InvalidOperation, OverflowError) as exc:
        raise UsageError(f"{option}: {exc}; expected {WHEN_HELP}") from None
    if absolute is None:
        raise UsageError(f"{option}: expected {WHEN_HELP}, got {text!r}")
    return _in_range(absolute, text, option)


def _in_range(when_ns: int, text: str, option: str) -> int:
    if not MIN_NS <= when_ns <= MAX_NS:
        raise UsageError(
            f"{option}: {text!r} is outside 1677-09-21..2262-04-11, the range of the archive's timestamps"
        )
    return when_ns


def resolve_range(since: str | None, until: str | None, now: int | None = None) -> tuple[int, int]:
    """The ``[since, until)`` range in nanoseconds; since defaults to 1h, until to now."""
    current = now_ns() if now is None else now
    since_ns = parse_when(since or "1h", current, option="--since")
    until_ns = parse_when(until, current, option="--until") if until else current
    if until_ns <= since_ns:
        raise UsageError(f"--until ({until or 'now'}) must be after --since ({since or '1h'})")
    return since_ns, until_ns
