"""Text output of ``--count`` and ``--top``: aligned tables and bar charts, names shown escaped.

The bar chart looks like ``archiver stats``'s: one line per bucket, the bar
scaled to the busiest, block characters on a UTF-8 terminal and ``#``
otherwise.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from typing import BinaryIO

from archiver.errors import UsageError
from archiver.terminal import visible

BAR_WIDTH = 40
#: Groups shown as columns of a --count table; the rest are summed in "other".
MAX_GROUP_COLUMNS = 8
#: Buckets drawn when empty ones are shown too; beyond, only buckets with logs.
MAX_DRAWN_BUCKETS = 5000
NONE_LABEL = "(none)"
_NS = 1_000_000_000


def open_output(path: str | None) -> BinaryIO | None:
    """The ``--output`` file opened for writing (None for stdout); UsageError when it cannot be."""
    if path is None:
        return None
    try:
        return open(path, "wb")  # the caller closes it
    except OSError as exc:
        raise UsageError(f"--output: cannot write {path}: {exc.strerror or exc}") from None


def iso_time(ns: int) -> str:
    """RFC 3339 UTC, nanoseconds only when there are some: ``2026-11-24T13:00:00Z``."""
    seconds, fraction = divmod(ns, _NS)
    whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{whole}.{fraction:09d}Z" if fraction else f"{whole}Z"


def bucket_label(ns: int, every_ns: int) -> str:
    """A bucket's start, as precise as its width needs."""
    seconds = ns // _NS
    if every_ns % (86400 * _NS) == 0:
        return time.strftime("%Y-%m-%d", time.gmtime(seconds))
    if every_ns % (60 * _NS) == 0:
        return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(seconds))
    if every_ns % _NS == 0:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return iso_time(ns).removesuffix("Z")


def bar_mark() -> str:
    """The bar character: a block on a UTF-8 stdout, ``#`` elsewhere."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return "█" if encoding.startswith("utf") else "#"


def table_lines(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Aligned lines: columns in ``right`` right-aligned, the last column never padded."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    out = []
    for row in [header, *rows]:
        cells = [
            cell if i == len(row) - 1 else cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip() + "\n")
    return out


def render_chart(
    rows: Sequence[tuple[int, str | None, int]],
    label: str | None,
    every_ns: int,
    when: Callable[[int], str],
) -> list[str]:
    """The --count table: a line per bucket with the counts per group, the total and a bar."""
    per_bucket: dict[int, dict[str | None, int]] = {}
    totals: dict[str | None, int] = {}
    for bucket, group, count in rows:
        per_bucket.setdefault(bucket, {})[group] = per_bucket.get(bucket, {}).get(group, 0) + count
        totals[group] = totals.get(group, 0) + count
    buckets = sorted(per_bucket)
    if buckets and (buckets[-1] - buckets[0]) // every_ns <= MAX_DRAWN_BUCKETS:
        # Empty buckets between the first and last with logs are shown: a gap is an answer too.
        buckets = list(range(buckets[0], buckets[-1] + every_ns, every_ns))
    shown = sorted(totals, key=lambda g: (-totals[g], g is None, g or ""))[:MAX_GROUP_COLUMNS]
    other = len(totals) > len(shown)
    header = ["TIME (UTC)"]
    if label is not None:
        header += [_name(g) for g in shown] + (["other"] if other else []) + ["TOTAL"]
    else:
        header.append("COUNT")
    busiest = max((sum(per_bucket.get(b, {}).values()) for b in buckets), default=0) or 1
    mark = bar_mark()
    table = []
    for bucket in buckets:
        counts = per_bucket.get(bucket, {})
        total = sum(counts.values())
        cells = [when(bucket)]
        if label is not None:
            cells += [f"{counts.get(g, 0):,}" for g in shown]
            if other:
                cells.append(f"{total - sum(counts.get(g, 0) for g in shown):,}")
        cells.append(f"{total:,}")
        bar = mark * round(BAR_WIDTH * total / busiest) if total else ""
        table.append([*cells, bar])
    lines = table_lines([*header, ""], table, set(range(1, len(header))))
    if label is not None:
        lines.insert(0, f"logs per {label}, {_width(every_ns)} buckets\n")
    return lines


def _name(group: str | None) -> str:
    if group is None:
        return NONE_LABEL
    shown = visible(group)
    return shown if len(shown) <= 24 else shown[:23] + "…"


def _width(every_ns: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if every_ns % (size * _NS) == 0:
            return f"{every_ns // (size * _NS)}{unit}"
    return f"{every_ns / 1e6:g}ms"
