"""Which partition a message belongs to: from its subject, else from its payload."""

from __future__ import annotations

from typing import Any

import orjson

from archiver.service.spool_record import record_subject

SUBJECT_ROOT = "logs"


def app_region_from_subject(subject: str) -> tuple[str, str] | None:
    """(app, region) of ``logs.<app>.<region>.<instance>``; None for any other shape."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[0] == SUBJECT_ROOT:
        return parts[1], parts[2]
    return None


def app_region_from_payload(payload: bytes) -> tuple[str | None, str | None]:
    """(``fly.app.name``, ``fly.region``) of a Fly JSON message; None where absent or not text."""
    try:
        message: Any = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None, None
    fly = message.get("fly") if isinstance(message, dict) else None
    if not isinstance(fly, dict):
        return None, None
    app = fly.get("app")
    name = app.get("name") if isinstance(app, dict) else None
    region = fly.get("region")
    return (name if isinstance(name, str) else None, region if isinstance(region, str) else None)


def app_region_of_record(subject: bytes, payload: bytes) -> tuple[str | None, str | None]:
    """(app, region) of a spooled record: its subject (minus a JetStream tag), else its payload."""
    plain = record_subject(subject).decode("utf-8", "replace")
    return app_region_from_subject(plain) or app_region_from_payload(payload)
