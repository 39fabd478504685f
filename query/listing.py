"""``archiver ls``: the apps of the archive, or the hours of some apps with files, rows and bytes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from archiver.archive.layout import NS_PER_DAY, NS_PER_HOUR, NS_PER_SECOND, app_prefix
from archiver.archive.navigator import AppSelection, ArchiveFile, list_apps, list_files, select_apps
from archiver.config import ArchiveSettings
from archiver.errors import BadFileError, DamagedFileError, VanishedError
from archiver.storage.interface import Storage
from archiver.storage.open import check_for_reading, open_read_storage
from archiver.table.log_view import read_view
from archiver.terminal import visible
from query.plan import HourFiles, Planner
from query.run import open_reader
from query.scan import Reader
from query.supersede import FooterReader, live_files


@dataclass(frozen=True, slots=True)
class LsRequest:
    """A checked ``archiver ls`` invocation."""

    archive: ArchiveSettings
    apps: tuple[str, ...]
    since_ns: int | None
    now_ns: int
    strict: bool = False


async def run_ls(request: LsRequest) -> None:
    """List apps (as keys give them back: each works with ``--app``), or the hours of the requested apps."""
    storage = open_read_storage(request.archive)
    try:
        if not request.apps:
            _, apps = await asyncio.gather(
                check_for_reading(request.archive, storage), _apps(storage, request)
            )
            if not apps:
                sys.stderr.write(f"note: no apps in {storage.url}\n")
            sys.stdout.write("".join(f"{visible(app)}\n" for app in apps))  # names reach a terminal escaped
            return
        await check_for_reading(request.archive, storage)
        groups = await _ls_hours(storage, request)
        reader = open_reader(request.archive, storage, ranged=True)
        try:
            await _print_hours(reader, groups, len(request.apps) > 1, request.strict)
        finally:
            reader.close()
    finally:
        await storage.close()


async def _apps(storage: Storage, request: LsRequest) -> list[str]:
    """The apps with live files in the table (read beside a listing of the root, used when there is none)."""
    every = AppSelection((), None)
    view, listed = await asyncio.gather(
        read_view(storage, every, strict=request.strict, warn=_warn), list_apps(storage)
    )
    return listed if view is None else sorted({f.app for f in view.files})


async def _ls_hours(storage: Storage, request: LsRequest) -> list[tuple[str, HourFiles]]:
    out: list[tuple[str, HourFiles]] = []
    for app in dict.fromkeys(request.apps):
        selection = select_apps([app])
        if request.since_ns is not None:
            planner = Planner(
                storage, selection, request.since_ns, request.now_ns, strict=request.strict, warn=_warn
            )
            seen: set[str] = set()
            for group in await planner.all_hours():
                # A day file is in each hour of its day (the planner): listed once, on a row of its own.
                days = [f for f in group.files if f.length_ns > NS_PER_HOUR and f.key not in seen]
                seen.update(f.key for f in days)
                if days:
                    out.append((app, HourFiles(days[0].hour_ns, days)))
                group.files = [f for f in group.files if f.length_ns <= NS_PER_HOUR]
                if group.files:
                    out.append((app, group))
            continue
        hours: dict[tuple[int, bool], HourFiles] = {}  # a day's files apart from its first hour's
        prefixes = [app_prefix(segment) for segment in selection.segments]
        view, listed = await asyncio.gather(
            read_view(storage, selection, strict=request.strict, warn=_warn),
            list_files(storage, prefixes, apps=selection),
        )
        # A table's files are its snapshot's; v1 files are never in it, they are taken as listed.
        found = listed if view is None else view.files + [f for f in listed if f.region is not None]
        for planned in found:
            key = (planned.hour_ns, planned.length_ns <= NS_PER_HOUR)
            hours.setdefault(key, HourFiles(planned.hour_ns)).files.append(planned)
        for (hour_ns, of_hour), group in hours.items():  # files a compaction superseded are not counted
            if view is None or any(f.region is not None for f in group.files):
                # An hour's files are resolved with its day's day files (query.supersede), as a query does.
                day = hours.get((hour_ns - hour_ns % NS_PER_DAY, False))
                days = day.files if of_hour and day is not None else []
                with contextlib.suppress(VanishedError):
                    kept = await live_files(group.files + days, FooterReader(storage))
                    group.files = [f for f in kept if (f.length_ns <= NS_PER_HOUR) == of_hour]
        out.extend((app, hours[h]) for h in sorted(hours) if hours[h].files)
    return out


async def _print_hours(
    reader: Reader, groups: list[tuple[str, HourFiles]], show_app: bool, strict: bool = False
) -> None:
    if not groups:
        sys.stderr.write("note: no files for these apps in that time\n")
        return
    files = [f for _, group in groups for f in group.files]
    found = await asyncio.gather(*(_summary(reader, f) for f in files))
    counts: dict[ArchiveFile, tuple[int, tuple[str, ...]]] = {}
    for planned, summary in zip(files, found, strict=True):
        if isinstance(summary, BadFileError):
            if strict:
                raise DamagedFileError(planned.key, summary)
            sys.stderr.write(f"warning: skipped {planned.key}: {summary}\n")
            counts[planned] = (0, ())
        else:
            counts[planned] = summary
    table = [["APP"] if show_app else []]
    table[0] += ["HOUR (UTC)", "FILES", "ROWS", "BYTES", "REGIONS"]
    for app, group in groups:
        hour = datetime.fromtimestamp(group.hour_ns // NS_PER_SECOND, UTC)
        whole_day = all(f.length_ns > NS_PER_HOUR for f in group.files)  # a rolled-up day: every hour of it
        label = f"{hour:%Y-%m-%d} (day)" if whole_day else f"{hour:%Y-%m-%dT%H}:00Z"
        rows = sum(counts[f][0] for f in group.files)
        regions = visible(",".join(sorted({region for f in group.files for region in counts[f][1]})))
        cells = [visible(app)] if show_app else []
        table.append([*cells, label, str(len(group.files)), str(rows), str(group.bytes), regions])
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    numeric = {len(table[0]) - 4, len(table[0]) - 3, len(table[0]) - 2}  # FILES, ROWS, BYTES align right
    lines = [
        "  ".join(
            cell.rjust(w) if i in numeric else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in table
    ]
    sys.stdout.write("\n".join(lines) + "\n")


async def _summary(reader: Reader, planned: ArchiveFile) -> tuple[int, tuple[str, ...]] | BadFileError:
    try:
        return await reader.summary(planned)
    except BadFileError as exc:
        return exc  # reported in listing order, after every read is done


def _warn(line: str) -> None:
    sys.stderr.write(f"{line}\n")
