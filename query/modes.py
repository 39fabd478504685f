"""What ``archiver query`` is asked to do besides printing logs: the options of ``--count``, ``--top``,
``--follow`` and ``--where``, checked together before anything is read (a bad combination exits 2).

Light on purpose (no pyarrow): it runs while the command line is parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from archiver.archive import schema
from archiver.errors import UsageError
from archiver.units import parse_duration_s
from query.where import Condition, parse_condition

#: ``--by`` values naming a column (app and region come from the key or the file, the rest from the file).
BY_COLUMNS = (schema.APP, schema.REGION, schema.INSTANCE, schema.LEVEL, schema.PROVIDER, schema.HOST)
BY_FIELD_PREFIX = "field:"
#: Fewest nanoseconds in a --count bucket.
MIN_EVERY_NS = 1_000_000


@dataclass(frozen=True, slots=True)
class CountSpec:
    """``--count``: the grouping (a column, a JSON field path, or none) and the bucket width."""

    by_column: str | None = None
    by_field: tuple[str, ...] | None = None
    every_ns: int | None = None  # None: chosen from the range

    @property
    def by_label(self) -> str | None:
        """The group's name in headers: the column, or the field's dotted path."""
        if self.by_field is not None:
            return ".".join(self.by_field)
        return self.by_column


@dataclass(frozen=True, slots=True)
class Modes:
    """The checked mode options of one ``archiver query``."""

    where: tuple[Condition, ...] = ()
    count: CountSpec | None = None
    top: int | None = None
    follow: bool = False


def parse_by(text: str) -> tuple[str | None, tuple[str, ...] | None]:
    """(column, None) or (None, JSON field path) for a ``--by`` value; UsageError otherwise."""
    lowered = text.strip().lower()
    if lowered in BY_COLUMNS:
        return lowered, None
    if text.startswith(BY_FIELD_PREFIX):
        # The same path grammar as --where (has: checks it without an operator).
        try:
            return None, parse_condition("has:" + text[len(BY_FIELD_PREFIX) :]).path
        except UsageError:
            pass
    raise UsageError(
        f"--by: expected one of {', '.join(BY_COLUMNS)} or field:PATH (a JSON field), got {text!r}"
    )


def parse_every(text: str) -> int:
    """Nanoseconds of a ``--every`` bucket width; UsageError otherwise."""
    try:
        seconds = parse_duration_s(text)
    except ValueError as exc:
        raise UsageError(f"--every: {exc}") from None
    every_ns = round(seconds * 1e9)
    if every_ns < MIN_EVERY_NS:
        raise UsageError(f"--every: must be at least 1ms, got {text!r}")
    return every_ns


def check_modes(options: dict[str, Any], output_format: str) -> Modes:
    """The mode options, checked against each other and the rest; UsageError for a bad combination."""
    where = tuple(parse_condition(text) for text in options.get("where") or ())
    count, top, follow = options.get("count"), options.get("top"), options.get("follow")
    by, every = options.get("by"), options.get("every")
    if not count and (by is not None or every is not None):
        raise UsageError(f"{'--by' if by is not None else '--every'} needs --count")
    chosen = [
        name for name, on in (("--count", count), ("--top", top is not None), ("--follow", follow)) if on
    ]
    if len(chosen) > 1:
        raise UsageError(f"{' and '.join(chosen)} cannot be combined")
    if (count or top is not None) and (options.get("limit") is not None or options.get("tail") is not None):
        raise UsageError(f"{chosen[0]} cannot be combined with --limit or --tail")
    if (count or top is not None) and output_format == "parquet":
        raise UsageError(f"{chosen[0]} prints text, json or csv, not parquet")
    if follow:
        if options.get("until") is not None:
            raise UsageError("--follow cannot be combined with --until: it follows until Ctrl-C")
        if options.get("limit") is not None:
            raise UsageError("--follow cannot be combined with --limit (--tail N --follow is tail -f)")
        if output_format == "parquet":
            raise UsageError("--follow prints text, json or csv, not parquet")
    spec = None
    if count:
        column, field = parse_by(by) if by is not None else (None, None)
        spec = CountSpec(column, field, parse_every(every) if every is not None else None)
    return Modes(where, spec, top, bool(follow))
