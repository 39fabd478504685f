"""``archiver stats``: per app and day files, rows, bytes and compression; a bar chart of volume per hour.

Rows come from Parquet footers only, read concurrently (one ranged read per
file on S3). Bytes are the stored objects' sizes: what you pay for.

The raw JSON size is estimated, not stored anywhere: per app, up to
:data:`SAMPLE_ROWS` rows spread evenly over the first row group of its
oldest and newest file in range are rebuilt into their original JSON with
:func:`archiver.archive.message.rebuild_payload`; their mean length plus the newline
of a JSON line, times the rows, is the raw size the ratio divides by the bytes.

The chart shows the last ``hours`` hours of the range that hold logs, one
line per hour, scaled to the busiest; when levels differ it splits each bar
into errors, warnings and the rest, which needs the ``level`` column of those
hours' files (dictionary-encoded: a few bytes per file).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from archiver.archive import schema
from archiver.archive.layout import NS_PER_HOUR, NS_PER_SECOND, hour_start_ns
from archiver.archive.message import rebuild_payload
from archiver.archive.navigator import ArchiveFile, app_selection, files_of_days
from archiver.archive.timestamps import exact_rows
from archiver.codec.merge_inputs import schema_problem
from archiver.config import ArchiveSettings
from archiver.errors import DamagedFileError, StorageError
from archiver.storage.open import open_filesystem, open_read_storage
from archiver.table.log_view import read_view
from archiver.terminal import visible
from archiver.units import format_bytes

SAMPLE_ROWS = 1000
FOOTER_THREADS = 16
BAR_WIDTH = 50
ERROR_LEVELS = frozenset(
    {"error", "err", "fatal", "critical", "crit", "panic", "emerg", "emergency", "alert"}
)
WARN_LEVELS = frozenset({"warn", "warning"})
#: Every hour, even one timestamped ahead of the clock (the hour-aligned end of hours in 2116).
_FAR_FUTURE = hour_start_ns(2**62)
#: Concurrent listings of an app's days.
_LIST_CONCURRENCY = 16


@dataclass(slots=True)
class FileInfo:
    """One archive file, and rows from its footer."""

    file: ArchiveFile
    rows: int = 0


@dataclass(slots=True)
class DayStats:
    """Totals of one app and day."""

    files: int = 0
    rows: int = 0
    bytes: int = 0


@dataclass(slots=True)
class Report:
    """Everything ``archiver stats`` prints."""

    days: dict[tuple[str, str], DayStats] = field(default_factory=dict)
    raw_per_row: dict[str, float] = field(default_factory=dict)
    hours: dict[int, Counter[str]] = field(default_factory=dict)


def _hour(hour_ns: int) -> datetime:
    return datetime.fromtimestamp(hour_ns // NS_PER_SECOND, UTC)


def level_group(level: str | None) -> str:
    """``error``, ``warn`` or ``other`` for a level value."""
    value = (level or "").lower()
    return "error" if value in ERROR_LEVELS else "warn" if value in WARN_LEVELS else "other"


class _Files:
    """Footer, column and sample reads through pyarrow's filesystem (ranged reads on S3)."""

    def __init__(self, settings: ArchiveSettings) -> None:
        self.fs, self.base = open_filesystem(settings)

    def _open(self, info: FileInfo) -> pq.ParquetFile:
        return pq.ParquetFile(self.fs.open_input_file(f"{self.base}/{info.file.key}"))

    def rows(self, info: FileInfo) -> int | str:
        """Rows from the footer, or why the file is not an archive file."""
        import pyarrow.dataset as ds

        try:
            # A fragment with a known size reads just the footer: one ranged GET on S3, no HEAD.
            fragment = ds.ParquetFileFormat().make_fragment(
                f"{self.base}/{info.file.key}", filesystem=self.fs, file_size=info.file.size
            )
            metadata = fragment.metadata
            problem = schema_problem(metadata.schema.to_arrow_schema())
        except FileNotFoundError:
            return "it vanished after listing (compacted or deleted)"
        except (pa.ArrowException, OSError, ValueError) as exc:
            return (str(exc).splitlines() or [type(exc).__name__])[0]
        return problem if problem is not None else int(metadata.num_rows)

    def levels(self, info: FileInfo) -> dict[int, Counter[str]]:
        """Rows per level group, by hour: the file's hour, or each hour of a day file (from its timestamps)."""
        pf = self._open(info)
        names = pf.schema_arrow.names
        if info.file.length_ns <= NS_PER_HOUR:
            counts: Counter[str] = Counter()
            if schema.LEVEL not in names:
                counts["other"] += pf.metadata.num_rows
                return {info.file.hour_ns: counts}
            for item in pc.value_counts(pf.read(columns=[schema.LEVEL]).column(0)).to_pylist():
                counts[level_group(item["values"])] += item["counts"]
            return {info.file.hour_ns: counts}
        table = pf.read(columns=[schema.TIMESTAMP, *([schema.LEVEL] if schema.LEVEL in names else [])])
        micros = pc.cast(pc.cast(table[schema.TIMESTAMP], pa.timestamp("us")), pa.int64())
        hour = pc.multiply(pc.divide(micros, 3600 * 10**6), NS_PER_HOUR)  # µs >= 0: integer division floors
        level = table[schema.LEVEL] if schema.LEVEL in names else pa.nulls(table.num_rows, pa.string())
        grouped = (
            pa.table({"hour": hour, "level": level})
            .group_by(["hour", "level"])
            .aggregate([([], "count_all")])
        )
        out: dict[int, Counter[str]] = defaultdict(Counter)
        for row in grouped.to_pylist():
            out[row["hour"]][level_group(row["level"])] += row["count_all"]
        return dict(out)

    def sample_sizes(self, info: FileInfo) -> list[int]:
        pf = self._open(info)
        if pf.metadata.num_row_groups == 0:
            return []
        table = pf.read_row_group(0)
        step = max(1, table.num_rows // SAMPLE_ROWS)
        table = table.take(pa.array(range(0, table.num_rows, step)))
        app, region = info.file.app, info.file.region
        # A v2 row carries its region; a v1 file's is its key's.
        return [
            len(rebuild_payload(row, app, row.get(schema.REGION) or region or "")) + 1  # +1: the newline
            for row in exact_rows(table)
        ]


async def collect(
    settings: ArchiveSettings,
    apps: Sequence[str],
    since_ns: int,
    hours: int,
    warn: Callable[[str], None] | None = None,
    strict: bool = False,
) -> Report:
    """List and read what :func:`print_report` shows.

    A file that is not an archive file (corrupt, foreign) is left out with a
    ``warn`` line naming it, or with ``strict`` fails the run (StorageError naming it).
    """
    storage = open_read_storage(settings)
    try:
        await storage.check()
        files: list[FileInfo] = []
        selection = await app_selection(storage, apps)
        view = await read_view(storage, selection, since_ns, strict=strict, warn=warn)  # None: not a table
        for segment in selection.segments:
            found = await files_of_days(storage, segment, since_ns, _FAR_FUTURE, _LIST_CONCURRENCY, selection)
            # A table's files are its snapshot's; v1 files are never in it, they are taken as listed.
            files.extend(FileInfo(file) for file in found if view is None or file.region is not None)
        files.extend(FileInfo(file) for file in (view.files if view is not None else ()))
    finally:
        await storage.close()
    reader = _Files(settings)
    loop = asyncio.get_running_loop()
    report = Report()
    with ThreadPoolExecutor(FOOTER_THREADS, thread_name_prefix="stats") as pool:

        def run(fn: Any, items: Sequence[FileInfo]) -> Any:
            return asyncio.gather(*(loop.run_in_executor(pool, fn, item) for item in items))

        try:
            readable = []
            for info, rows in zip(files, await run(reader.rows, files), strict=True):
                if isinstance(rows, str):
                    if strict:
                        raise DamagedFileError(info.file.key, rows)
                    if warn is not None:
                        warn(f"warning: skipped {info.file.key}: {rows}")
                    continue
                info.rows = rows
                readable.append(info)
            files = readable
            by_hour: dict[int, list[FileInfo]] = defaultdict(list)
            for info in files:  # a day file in each hour of its day
                for hour in range(info.file.hour_ns, info.file.hour_ns + info.file.length_ns, NS_PER_HOUR):
                    by_hour[hour].append(info)
            chart_hours = set(sorted(by_hour)[-hours:] if hours > 0 else [])
            charted = list({id(f): f for h in sorted(chart_hours) for f in by_hour[h]}.values())
            by_app: dict[str, list[FileInfo]] = defaultdict(list)
            for info in files:
                by_app[info.file.app].append(info)
            samples = {
                app: [group[0], group[-1]] if len(group) > 1 else group for app, group in by_app.items()
            }
            sample_files = [f for group in samples.values() for f in group]
            levels = await run(reader.levels, charted)
            sizes = await run(reader.sample_sizes, sample_files)
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"cannot read the archive's files: {str(exc).splitlines()[0]}") from exc
    for info in files:
        day = report.days.setdefault((info.file.app, f"{_hour(info.file.hour_ns):%Y-%m-%d}"), DayStats())
        day.files += 1
        day.rows += info.rows
        day.bytes += info.file.size
    for by_hour_counts in levels:
        for hour, counts in by_hour_counts.items():
            if hour in chart_hours:
                report.hours.setdefault(hour, Counter()).update(counts)
    lengths: dict[str, list[int]] = defaultdict(list)
    for info, found in zip(sample_files, sizes, strict=True):
        lengths[info.file.app].extend(found)
    report.raw_per_row = {app: sum(v) / len(v) for app, v in lengths.items() if v}
    return report


def print_report(report: Report, out: TextIO) -> None:
    """The per-day table, a total line, and the hourly chart."""
    table = [["APP", "DAY", "FILES", "ROWS", "BYTES", "B/ROW", "RAW JSON", "RATIO"]]
    total = DayStats()
    raw_total = 0.0
    for (app, day), s in sorted(report.days.items()):
        raw = s.rows * report.raw_per_row.get(app, 0.0)
        raw_total += raw
        total.files, total.rows, total.bytes = (
            total.files + s.files,
            total.rows + s.rows,
            total.bytes + s.bytes,
        )
        table.append([visible(app), day, *_cells(s, raw)])  # names reach a terminal escaped
    table.append(["total", "", *_cells(total, raw_total)])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    _chart(report.hours, out)


def _cells(s: DayStats, raw: float) -> list[str]:
    per_row = f"{s.bytes / s.rows:.1f}" if s.rows else "-"
    ratio = f"{raw / s.bytes:.1f}x" if s.bytes and raw else "-"
    return [str(s.files), str(s.rows), str(s.bytes), per_row, format_bytes(raw) if raw else "-", ratio]


def _chart(hours: dict[int, Counter[str]], out: TextIO) -> None:
    if not hours:
        return
    unicode = (getattr(out, "encoding", None) or "").lower().replace("-", "").startswith("utf")
    marks = (
        {"error": "█", "warn": "▒", "other": "░"} if unicode else {"error": "#", "warn": "=", "other": "."}
    )
    present = {group for counts in hours.values() for group, n in counts.items() if n}
    split = len(present) > 1
    busiest = max(sum(c.values()) for c in hours.values()) or 1
    legend = "  ".join(f"{marks[g]} {g}" for g in ("error", "warn", "other") if g in present) if split else ""
    out.write(f"\nlogs per hour (UTC){'  ' + legend if legend else ''}\n")
    for hour_ns in sorted(hours):
        counts = hours[hour_ns]
        total = sum(counts.values())
        width = round(BAR_WIDTH * total / busiest)
        if split:
            # Errors and warnings first, each at least one cell when present, so a few errors still show.
            bar = ""
            for group in ("error", "warn"):
                if counts[group]:
                    bar += marks[group] * max(1, round(BAR_WIDTH * counts[group] / busiest))
            bar += marks["other"] * max(0, width - len(bar))
        else:
            bar = marks["other"] * width
        when = _hour(hour_ns)
        out.write(f"{when:%Y-%m-%dT%H}  {bar.ljust(BAR_WIDTH)}  {total:>10,}\n")
