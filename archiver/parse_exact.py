"""The exact path of :mod:`archiver.parse`: one payload at a time with orjson.

Payloads the bulk reader refuses, and rows it cannot hold exactly, come here.
The semantics (malformed payloads, ``extra``, levels) are documented in
:mod:`archiver.parse`; :func:`archiver.message.rebuild_message` inverts them.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from typing import Any

import orjson
import pyarrow as pa

from archiver import schema
from archiver.message import base_message, format_timestamp_ns, parse_timestamp

#: Regex (RE2 and re alike) finding a JSON key of :data:`~archiver.schema.APP_LEVEL_KEYS`.
LEVEL_KEY = '"(?:' + "|".join(re.escape(key) for key in schema.APP_LEVEL_KEYS) + ')"'
_LEVEL_KEY_RE = re.compile(LEVEL_KEY)
_JSON_OBJECT_START_RE = re.compile(r"[ \t\r\n]*\{")
_PINO_LEVELS = {10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
_MISSING: Any = object()
_MALFORMED_EXTRA = orjson.dumps({schema.MALFORMED_MARK: True}).decode()


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


def exact_rows(payloads: Sequence[bytes], app: str, region: str, received_ns: int) -> tuple[pa.Table, int]:
    """One row per payload (``schema.FILE_SCHEMA``) and how many of them were malformed."""
    rows: list[tuple[Any, ...]] = []
    malformed = 0
    for payload in payloads:
        raw = bytes(payload)
        row = exact_row(raw, app, region)
        if row is None:
            row = _malformed_row(raw, received_ns)
            malformed += 1
        rows.append(row)
    columns = list(zip(*rows, strict=True))
    arrays = [pa.array(values, field.type) for values, field in zip(columns, schema.FILE_SCHEMA, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema.FILE_SCHEMA), malformed


def _string(container: Any, key: str) -> str | None:
    value = container.get(key) if isinstance(container, dict) else None
    return value if isinstance(value, str) else None


def exact_row(payload: bytes, app: str, region: str) -> tuple[Any, ...] | None:
    """The column values of one payload, None when it is malformed."""
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict) or schema.MALFORMED_MARK in obj:
        return None
    ts_text = obj.get("timestamp")
    ns = parse_timestamp(ts_text) if isinstance(ts_text, str) else None
    if ns is None:
        return None
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
        return None
    level = (app_level(message) if message is not None else None) or fly_level
    return (ns, instance, host, provider, level, fly_level, message, extra_text)


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


def _malformed_row(payload: bytes, received_ns: int) -> tuple[Any, ...]:
    try:
        text = payload.decode("utf-8")
        extra = _MALFORMED_EXTRA
    except UnicodeDecodeError:
        text = payload.decode("utf-8", errors="replace")
        raw = base64.b64encode(payload).decode("ascii")
        extra = orjson.dumps({schema.MALFORMED_MARK: True, schema.RAW_BASE64_MARK: raw}).decode()
    return (received_ns, None, None, None, None, None, text, extra)
