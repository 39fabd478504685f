"""archiver's own logs: on stdout, JSON lines when it is not a TTY, and rate-limited warnings.

The hot path never logs per message: repeated problems (slow-consumer drops,
upload failures, spool full) go through :class:`RateLimitedLog`, which emits
the first occurrence at once and then at most one summary per interval with
the count suppressed meanwhile.

Every line, archiver's own and third-party libraries' (nats-py, botocore,
asyncio), goes through one handler whose formatters pass the text through
:func:`archiver.redact.redact`, so a secret echoed by a library is masked.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import orjson

from archiver.redact import redact

LOGGER_NAME = "archiver"
log = logging.getLogger(LOGGER_NAME)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        if record.name != LOGGER_NAME and not record.name.startswith(LOGGER_NAME + "."):
            entry["logger"] = record.name
        fields = getattr(record, "fields", None)
        if fields:
            entry.update(fields)
        if record.exc_info and record.levelno >= logging.ERROR:
            # The last line only (type and message): a traceback would spread one event over many lines.
            entry["error"] = self.formatException(record.exc_info).splitlines()[-1]
        return redact(orjson.dumps(entry, default=str).decode())


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", None) or {}
        extra = " ".join(f"{k}={v}" for k, v in fields.items())
        stamp = self.formatTime(record, "%H:%M:%S")
        line = f"{stamp} {record.levelname.lower():7} {record.getMessage()}" + (f"  {extra}" if extra else "")
        if record.exc_info and record.levelno >= logging.ERROR:
            line += "  error=" + self.formatException(record.exc_info).splitlines()[-1]
        return redact(line)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """archiver's handler: a later setup_logging replaces it, other handlers (pytest's) stay."""


def setup_logging(
    level: str = "info", *, stream: TextIO | None = None, json_lines: bool | None = None
) -> None:
    """Send archiver's logs to ``stream`` (stdout), as JSON lines unless it is a terminal."""
    out = sys.stdout if stream is None else stream
    as_json = (not out.isatty()) if json_lines is None else json_lines
    formatter: logging.Formatter = _JsonFormatter() if as_json else _TextFormatter()
    formatter.converter = time.gmtime
    handler = _Handler(out)
    handler.setFormatter(formatter)
    log.handlers[:] = [handler]
    log.setLevel(level.upper())
    log.propagate = False
    # Third-party loggers (nats-py, botocore, asyncio) write through the same redacting handler, and
    # stay quiet unless debugging; without a root handler Python would print their tracebacks raw.
    root = logging.getLogger()
    root.handlers[:] = [h for h in root.handlers if not isinstance(h, _Handler)] + [handler]
    root.setLevel(logging.WARNING if level != "debug" else logging.DEBUG)
    logging.captureWarnings(True)  # Python warnings too: through the handler, not raw to stderr


def event(level: int, message: str, **fields: Any) -> None:
    """Log one line with structured fields."""
    log.log(level, message, extra={"fields": fields})


class RateLimitedLog:
    """Log a recurring problem at most once per ``interval_s``, with the count in between."""

    def __init__(self, message: str, interval_s: float = 10.0, level: int = logging.WARNING) -> None:
        self._message = message
        self._interval_s = interval_s
        self._level = level
        self._last_s = -float("inf")
        self._suppressed = 0

    def __call__(self, **fields: Any) -> None:
        """Count one occurrence; log it if the interval has passed."""
        now = time.monotonic()
        if now - self._last_s < self._interval_s:
            self._suppressed += 1
            return
        if self._suppressed:
            fields["suppressed_since_last"] = self._suppressed
        self._suppressed = 0
        self._last_s = now
        event(self._level, self._message, **fields)
