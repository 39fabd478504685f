"""The exact path of :mod:`archiver.codec.parse`: one payload at a time with orjson.

Payloads the bulk reader refuses, and rows it cannot hold exactly, come here.
The semantics (malformed payloads and their kinds, the timestamp window,
``extra``, levels) are documented in :mod:`archiver.codec.parse`;
:func:`archiver.archive.message.rebuild_message` inverts them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from archiver.archive import schema
from archiver.archive.message import base_message, format_timestamp_ns, parse_timestamp, split_truncated
from archiver.archive.timestamps import split_ns

#: Regex (RE2 and re alike) finding a JSON key of :data:`~archiver.archive.schema.APP_LEVEL_KEYS`.
LEVEL_KEY = '"(?:' + "|".join(re.escape(key) for key in schema.APP_LEVEL_KEYS) + ')"'
_LEVEL_KEY_RE = re.compile(LEVEL_KEY)
_JSON_OBJECT_START_RE = re.compile(r"[ \t\r\n]*\{")
_PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_MISSING: Any = object()
_MALFORMED_EXTRA = orjson.dumps({schema.MALFORMED_MARK: True}).decode()
_JSON_WHITESPACE = b" \t\r\n"
#: Oldest event time accepted: 2000-01-01T00:00:00Z (Fly did not exist; older is a broken clock).
MIN_TIMESTAMP_NS = 946_684_800 * 1_000_000_000
#: How far past the receive time an event time is accepted (clock skew): 1 day.
MAX_FUTURE_NS = 86_400 * 1_000_000_000
#: Known fields and their shape: None for a string leaf, a dict for an object.
_KNOWN_SHAPE: dict[str, Any] = {
    "event": {"provider": None},
    "fly": {"app": {"instance": None, "name": None}, "region": None},
    "host": None,
    "log": {"level": None},
    "message": None,
}


def newest_accepted_ns(received_ns: int) -> int:
    """The newest event time accepted in a batch received at ``received_ns``."""
    return received_ns + MAX_FUTURE_NS


def app_level(message: str) -> str | None:
    """The app's own level carried by a JSON-object ``message``, or None."""
    if not (_JSON_OBJECT_START_RE.match(message) and _LEVEL_KEY_RE.search(message)):
        return None
    return level_of(message)


def level_of(text: str | bytes) -> str | None:
    """The app level in a message already known to look like a JSON object with a level key."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    for key in schema.APP_LEVEL_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value.lower()
        if type(value) is int and value in _PINO_LEVELS:  # not bool, which is an int too
            return _PINO_LEVELS[value]
    return None


@dataclass(slots=True)
class ExactRows:
    """Rows of the exact path, malformed rows by kind, and rows with a known field of another type."""

    table: pa.Table
    malformed_kinds: dict[str, int] = field(default_factory=dict)
    wrong_type: int = 0


def exact_rows(payloads: Sequence[bytes], app: str, region: str, received_ns: int) -> tuple[pa.Table, int]:
    """One row per payload (``schema.FILE_SCHEMA``) and how many of them were malformed."""
    result = exact_table(payloads, app, region, received_ns)
    return result.table, sum(result.malformed_kinds.values())


def exact_table(
    payloads: Sequence[bytes], app: str, region: str, received_ns: int, newest_ns: int | None = None
) -> ExactRows:
    """One row per payload; event times outside [MIN_TIMESTAMP_NS, newest_ns] make a row malformed."""
    rows: list[tuple[Any, ...]] = []
    out = ExactRows(schema.FILE_SCHEMA.empty_table())
    kinds = out.malformed_kinds
    for payload in payloads:
        raw = bytes(payload)
        row = exact_row(raw, app, region, newest_ns)
        if isinstance(row, str):
            kinds[row] = kinds.get(row, 0) + 1
            rows.append(_malformed_row(raw, received_ns, row))
        else:
            out.wrong_type += row[-1]
            rows.append(row[:-1])
    if rows:
        ns, *columns = zip(*rows, strict=True)
        region_column = pa.repeat(pa.scalar(region, pa.string()), len(rows))
        strings = [pa.array(values, pa.string()) for values in columns]
        out.table = pa.Table.from_arrays([*split_ns(pa.array(ns, pa.int64())), region_column, *strings],
                                         schema=schema.FILE_SCHEMA)  # fmt: skip
    return out


def _string(container: Any, key: str) -> str | None:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, str) else None


def exact_row(payload: bytes, app: str, region: str, newest_ns: int | None = None) -> tuple[Any, ...] | str:
    """The exact time (ns) and string column values of one payload plus a wrong-type flag, or the malformed kind."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return _unparsed_kind(payload)
    if not isinstance(obj, dict):
        return "not_object"
    if schema.MALFORMED_MARK in obj:
        return "reserved_key"
    ts_text = obj.get("timestamp")
    ns = parse_timestamp(ts_text) if isinstance(ts_text, str) else None
    if ns is None or ns < MIN_TIMESTAMP_NS or (newest_ns is not None and ns > newest_ns):
        return "bad_timestamp"
    fly = obj.get("fly")
    instance = _string(fly.get("app") if isinstance(fly, dict) else None, "instance")
    host = _string(obj, "host")
    provider = _string(obj.get("event"), "provider")
    fly_level = _string(obj.get("log"), "level")
    message = _string(obj, "message")
    base = base_message(format_timestamp_ns(ns), instance, host, provider, fly_level, message, app, region)
    extra = _diff(obj, base)
    try:
        extra_text = orjson.dumps(extra).decode() if extra else None
    except orjson.JSONEncodeError:  # nested deeper than orjson writes (255): keep it verbatim instead
        return "too_deep"
    level = (app_level(message) if message is not None else None) or fly_level
    wrong_type = extra_text is not None and _wrong_type(obj, _KNOWN_SHAPE)
    return (ns, instance, host, provider, level, fly_level, message, extra_text, wrong_type)


def _unparsed_kind(payload: bytes) -> str:
    if payload.startswith(b"\x00") and split_truncated(payload) is not None:
        return "truncated"
    if not payload.strip(_JSON_WHITESPACE):
        return "empty"
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid_utf8"
    return "not_json"


def _wrong_type(obj: dict[str, Any], shape: dict[str, Any]) -> bool:
    """Whether a known field holds something else than its shape (null counts as absent)."""
    for key, sub in shape.items():
        value = obj.get(key)
        if value is None:
            continue
        if sub is None:
            if not isinstance(value, str):
                return True
        elif not isinstance(value, dict) or _wrong_type(value, sub):
            return True
    return False


def _diff(original: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    """What ``merge_extra(base, ...)`` needs to turn ``base`` back into ``original``."""
    out: dict[str, Any] = {}
    for key, value in original.items():
        implied = base.get(key, _MISSING)
        if value == implied:  # a C-level deep compare prunes equal subtrees
            continue
        if isinstance(value, dict) and isinstance(implied, dict):
            nested = _diff(value, implied)
            if nested:
                out[key] = nested
        else:
            out[key] = value
    for key in base:
        if key not in original:
            out[key] = None
    return out


def _malformed_row(payload: bytes, received_ns: int, kind: str) -> tuple[Any, ...]:
    marks: dict[str, Any] = {schema.MALFORMED_MARK: True}
    if kind == "truncated":
        split = split_truncated(payload)
        assert split is not None
        marks[schema.TRUNCATED_MARK] = True
        marks[schema.ORIGINAL_BYTES_MARK], payload = split
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = payload.decode("utf-8", errors="replace")
        marks[schema.RAW_BASE64_MARK] = base64.b64encode(payload).decode("ascii")
    extra = _MALFORMED_EXTRA if len(marks) == 1 else orjson.dumps(marks).decode()
    return (received_ns, None, None, None, None, None, text, extra)
