"""One Fly log message as the Fly log stream sends it: the envelope, written in one place.

A message is a JSON object with its fields in alphabetical order, every value
a string (the ``message`` is the app's line, itself JSON for apps that log
JSON)::

    {"event":{"provider":"app"},
     "fly":{"app":{"instance":"0e286551c30586","name":"web"},"region":"ord"},
     "host":"0ad1","log":{"level":"info"},"message":"GET / 200",
     "timestamp":"2026-11-24T10:00:00.123456789Z"}

published on ``logs.<app>.<region>.<instance>``. The load generator takes its
envelopes from here (and pastes pre-escaped messages into them for speed);
tests and benchmarks build single messages with :func:`fly_message`.
"""

from __future__ import annotations

import json
from typing import Any

#: What a test message says when it does not care which machine sent it (14 and 4 hex digits, as Fly's).
DEFAULT_INSTANCE = "0e286551c30586"
DEFAULT_HOST = "0ad1"


def fly_subject(app: str, region: str, instance: str) -> str:
    """The NATS subject Fly publishes a machine's logs on."""
    return f"logs.{app}.{region}.{instance}"


def fly_record(
    app: str,
    region: str,
    message: object,
    timestamp: object,
    *,
    instance: str = DEFAULT_INSTANCE,
    host: object = DEFAULT_HOST,
    provider: object = "app",
    level: object = "info",
    **fields: object,
) -> dict[str, Any]:
    """The message as a dict in Fly's field order; ``fields`` replace top-level fields or add them last.

    ``message`` and ``timestamp`` are strings in real traffic; tests pass other JSON values too.
    """
    record: dict[str, Any] = {
        "event": {"provider": provider},
        "fly": {"app": {"instance": instance, "name": app}, "region": region},
        "host": host,
        "log": {"level": level},
        "message": message,
        "timestamp": timestamp,
    }
    record.update(fields)
    return record


def encode_record(record: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, as Fly writes it (no spaces, non-ASCII text unescaped)."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()


def fly_message(
    app: str,
    region: str,
    message: object,
    timestamp: object,
    *,
    instance: str = DEFAULT_INSTANCE,
    host: object = DEFAULT_HOST,
    provider: object = "app",
    level: object = "info",
    **fields: object,
) -> bytes:
    """The payload of one Fly log message: :func:`fly_record` encoded as Fly writes it."""
    record = fly_record(
        app,
        region,
        message,
        timestamp,
        instance=instance,
        host=host,
        provider=provider,
        level=level,
        **fields,
    )
    return encode_record(record)
