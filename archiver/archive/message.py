"""The Fly log message format: timestamps, and rebuilding a message from an archived row.

A row (see :mod:`archiver.archive.schema`) holds a message as columns plus
``extra``; its exact time is :func:`row_timestamp_ns`. :func:`base_message`
is the message the columns, the app and the region imply, with keys in the
order Fly sends them; ``extra`` (written by :mod:`archiver.codec.parse`) is
deep-merged over it:

* an object in ``extra`` merges into the object at the same place;
* ``null`` in ``extra`` deletes a key the columns imply (a known field the
  original did not have); on any other key it is a literal JSON ``null``;
* any other value replaces or adds the key (unknown keys end up after the
  known ones, so the rebuilt dict equals the original but its key order may
  differ when the original interleaved unknown and known keys).

A malformed row (``extra`` carries :data:`~archiver.archive.schema.MALFORMED_MARK`)
holds the payload verbatim in ``message``, or in
:data:`~archiver.archive.schema.RAW_BASE64_MARK` when it was not valid UTF-8.

Truncation (``MAX_MESSAGE_BYTES``): the hot path replaces a payload longer
than the limit by :func:`truncate_payload`'s form, :data:`TRUNCATED_MAGIC`,
the original size in ASCII digits, ``:`` and the first bytes of the payload
(cut back to a UTF-8 character boundary). The marker travels inside the
payload, so it survives the spool and its replay unchanged;
:func:`split_truncated` recognises it when parsing. The magic starts with
NUL and 0xFF, bytes no JSON or UTF-8 text starts with, so only a deliberately
crafted binary payload could be mistaken for a truncated one; since the size
must be in canonical digits, even that one loses no byte (it is exactly
``TRUNCATED_MAGIC + size + b":" + kept``). A truncated
row is malformed, with :data:`~archiver.archive.schema.TRUNCATED_MARK` and
:data:`~archiver.archive.schema.ORIGINAL_BYTES_MARK` in ``extra``; it rebuilds to
the kept bytes.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from archiver.archive import schema

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_ORDINAL = _EPOCH.toordinal()
_NS_PER_S = 1_000_000_000
_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_MISSING: Any = object()
# RFC 3339 plus the leniencies seen in practice: a space for "T", lower-case
# "t"/"z", offsets without a colon, no offset at all (read as UTC). ASCII digits
# only: \d would also match other scripts' digits.
#: Starts a truncated payload (see the module docstring).
TRUNCATED_MAGIC = b"\x00\xffarchiver-truncated:"
_MAX_SIZE_DIGITS = 20
_RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):?([0-9]{2}))?\Z"
)


def truncate_payload(payload: bytes, max_bytes: int) -> bytes:
    """The stored form of a payload longer than ``max_bytes``: marker, original size, first bytes."""
    cut = start = max_bytes
    # payload[max_bytes] is the first byte dropped: when it continues a UTF-8 character, cut
    # before that character's lead byte (at most 3 bytes back) so valid text stays valid.
    while start > 0 and start > max_bytes - 3 and 0x80 <= payload[start] < 0xC0:
        start -= 1
    if start < cut and payload[start] >= 0xC0:
        cut = start
    return b"%s%d:%s" % (TRUNCATED_MAGIC, len(payload), payload[:cut])


def split_truncated(payload: bytes) -> tuple[int, bytes] | None:
    """(original size in bytes, kept bytes) of a :func:`truncate_payload` form; None for any other payload."""
    if not payload.startswith(TRUNCATED_MAGIC):
        return None
    start = len(TRUNCATED_MAGIC)
    end = payload.find(b":", start, start + _MAX_SIZE_DIGITS + 1)
    digits = payload[start:end]
    # Canonical digits only (no leading zero): then a crafted payload that merely looks like this
    # form is still given back byte for byte, as the same marker, size and kept bytes.
    if end < 0 or not digits.isdigit() or digits != b"%d" % int(digits):
        return None
    kept = payload[end + 1 :]
    original_bytes = int(digits)
    return (original_bytes, kept) if original_bytes > len(kept) else None


def format_timestamp_ns(ns: int) -> str:
    """Canonical Fly form of a UTC nanosecond timestamp: ``2022-09-27T20:34:37.252022967Z``."""
    seconds, fraction = divmod(ns, _NS_PER_S)
    # gmtime + strftime is ~2x faster than datetime arithmetic; years of int64 ns have 4 digits.
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(seconds))}.{fraction:09d}Z"


def parse_timestamp(text: str) -> int | None:
    """Nanoseconds since the epoch of an RFC 3339 timestamp; None if unparseable or out of int64 range."""
    match = _RFC3339.match(text)
    if match is None:
        return None
    try:  # validates the fields: month 13, February 30, hour 24, leap second 60 are refused
        when = datetime.fromisoformat(f"{text[:10]}T{text[11:19]}")
    except ValueError:
        return None
    fraction, sign, off_h, off_m = match.groups()
    seconds = (when.toordinal() - _EPOCH_ORDINAL) * 86400 + when.hour * 3600 + when.minute * 60 + when.second
    if sign is not None:
        offset = int(off_h) * 3600 + int(off_m) * 60
        seconds += -offset if sign == "+" else offset
    # Digits past the ninth are dropped; the caller keeps a non-canonical text verbatim.
    ns = seconds * _NS_PER_S + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
    return ns if _INT64_MIN <= ns <= _INT64_MAX else None


def timestamp_ns(value: Any) -> int:
    """Nanoseconds of a row's timestamp given as int ns, datetime (naive = UTC) or pyarrow scalar."""
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        return (aware - _EPOCH) // timedelta(microseconds=1) * 1000
    # pyarrow TimestampScalar (.value in its unit) and pandas Timestamp (.value in ns).
    raw = getattr(value, "value", None)
    if isinstance(raw, int):
        unit = getattr(getattr(value, "type", None), "unit", "ns")
        return int(raw * schema.NS_PER_UNIT[unit])
    raise TypeError(f"unsupported timestamp value of type {type(value).__name__}")


def row_timestamp_ns(row: Mapping[str, Any]) -> int:
    """The exact time of a row: ``timestamp`` as given (an int is already nanoseconds), else plus its nanos.

    Rows of schema v2 read with ``to_pylist`` carry a microsecond datetime and
    ``timestamp_nanos``; :func:`archiver.archive.timestamps.exact_rows` gives int nanoseconds instead.
    """
    value = row[schema.TIMESTAMP]
    nanos = row.get(schema.TIMESTAMP_NANOS)
    if isinstance(value, int) or not nanos:
        return timestamp_ns(value)
    return timestamp_ns(value) // 1000 * 1000 + int(nanos)


def base_message(
    timestamp: str,
    instance: str | None,
    host: str | None,
    provider: str | None,
    fly_level: str | None,
    message: str | None,
    app: str,
    region: str,
) -> dict[str, Any]:
    """The message the columns and partition values imply, keys in Fly's order, null columns left out."""
    out: dict[str, Any] = {}
    if provider is not None:
        out["event"] = {"provider": provider}
    fly_app: dict[str, Any] = {} if instance is None else {"instance": instance}
    fly_app["name"] = app
    out["fly"] = {"app": fly_app, "region": region}
    if host is not None:
        out["host"] = host
    if fly_level is not None:
        out["log"] = {"level": fly_level}
    if message is not None:
        out["message"] = message
    out["timestamp"] = timestamp
    return out


def merge_extra(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    """Deep-merge ``extra`` into ``base`` in place (see the module docstring for the rules)."""
    for key, value in extra.items():
        current = base.get(key, _MISSING)
        if isinstance(value, dict) and isinstance(current, dict):
            merge_extra(current, value)
        elif value is None and current is not _MISSING:
            del base[key]
        else:
            base[key] = value


def _extra(row: Mapping[str, Any]) -> dict[str, Any] | None:
    text = row.get(schema.EXTRA)
    if text is None:
        return None
    value = orjson.loads(text)
    return value if isinstance(value, dict) else None


def _malformed_payload(row: Mapping[str, Any], extra: Mapping[str, Any]) -> bytes:
    raw = extra.get(schema.RAW_BASE64_MARK)
    if isinstance(raw, str):
        return base64.b64decode(raw)
    return str(row.get(schema.MESSAGE) or "").encode("utf-8")


def rebuild_message(row: Mapping[str, Any], app: str, region: str) -> Any:
    """The original message of an archived row: a dict, or for a malformed row its JSON value or text.

    ``app`` is the partition value of the file the row came from; ``region`` the row's
    (schema v2: its ``region`` column; v1: the file's partition value).
    """
    extra = _extra(row)
    if extra is not None and extra.get(schema.MALFORMED_MARK) is True:
        payload = _malformed_payload(row, extra)
        try:
            return orjson.loads(payload)
        except orjson.JSONDecodeError:
            return payload.decode("utf-8", errors="replace")
    message = base_message(
        format_timestamp_ns(row_timestamp_ns(row)),
        row.get(schema.INSTANCE),
        row.get(schema.HOST),
        row.get(schema.PROVIDER),
        row.get(schema.FLY_LEVEL),
        row.get(schema.MESSAGE),
        app,
        region,
    )
    if extra:
        merge_extra(message, extra)
    return message


def rebuild_payload(row: Mapping[str, Any], app: str, region: str) -> bytes:
    """The original payload bytes of a malformed row; compact JSON of :func:`rebuild_message` otherwise."""
    extra = _extra(row)
    if extra is not None and extra.get(schema.MALFORMED_MARK) is True:
        return _malformed_payload(row, extra)
    return orjson.dumps(rebuild_message(row, app, region))
