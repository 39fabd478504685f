"""``archiver ls``: the apps of the archive, or the hours of some apps with files, rows and bytes."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from archiver.archive.layout import NS_PER_SECOND, app_prefix, encode_value, stored_value
from archiver.archive.navigator import ArchiveFile, list_files
from archiver.config import ArchiveSettings
from archiver.errors import BadFileError, DamagedFileError, VanishedError
from archiver.storage.interface import Storage
from archiver.storage.open import open_read_storage
from archiver.terminal import visible
from query.plan import HourFiles, Planner
from query.run import open_reader, start
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
    """List apps, or the hours of the requested apps with files, rows and bytes."""
    storage = open_read_storage(request.archive)
    try:
        apps = await start(request.archive, storage, request.apps)
        if not request.apps:
            if not apps:
                sys.stderr.write(f"note: no apps in {storage.url}\n")
            sys.stdout.write("".join(f"{visible(app)}\n" for app in apps))  # names reach a terminal escaped
            return
        groups = await _ls_hours(storage, request)
        reader = open_reader(request.archive, storage, ranged=True)
        try:
            await _print_hours(reader, groups, len(request.apps) > 1, request.strict)
        finally:
            reader.close()
    finally:
        await storage.close()


async def _ls_hours(storage: Storage, request: LsRequest) -> list[tuple[str, HourFiles]]:
    out: list[tuple[str, HourFiles]] = []
    for app in dict.fromkeys(request.apps):
        if request.since_ns is not None:
            planner = Planner(storage, [app], request.since_ns, request.now_ns)
            out.extend((app, group) for group in await planner.all_hours())
            continue
        hours: dict[int, HourFiles] = {}
        for planned in await list_files(storage, [app_prefix(encode_value(app))]):
            if planned.app == stored_value(app):
                hours.setdefault(planned.hour_ns, HourFiles(planned.hour_ns)).files.append(planned)
        for group in hours.values():  # files a compaction superseded are not counted (query.supersede)
            with contextlib.suppress(VanishedError):
                group.files = await live_files(group.files, FooterReader(storage))
        out.extend((app, hours[h]) for h in sorted(hours))
    return out


async def _print_hours(
    reader: Reader, groups: list[tuple[str, HourFiles]], show_app: bool, strict: bool = False
) -> None:
    if not groups:
        sys.stderr.write("note: no files for these apps in that time\n")
        return
    files = [f for _, group in groups for f in group.files]
    found = await asyncio.gather(*(_rows(reader, f) for f in files))
    counts: dict[ArchiveFile, int | None] = {}
    for planned, rows in zip(files, found, strict=True):
        if isinstance(rows, BadFileError):
            if strict:
                raise DamagedFileError(planned.key, rows)
            sys.stderr.write(f"warning: skipped {planned.key}: {rows}\n")
            counts[planned] = None
        else:
            counts[planned] = rows
    table = [["APP"] if show_app else []]
    table[0] += ["HOUR (UTC)", "FILES", "ROWS", "BYTES", "REGIONS"]
    for app, group in groups:
        hour = datetime.fromtimestamp(group.hour_ns // NS_PER_SECOND, UTC)
        rows = sum(counts[f] or 0 for f in group.files)
        regions = visible(",".join(sorted({f.region for f in group.files})))
        cells = [visible(app)] if show_app else []
        table.append(
            [*cells, f"{hour:%Y-%m-%dT%H}:00Z", str(len(group.files)), str(rows), str(group.bytes), regions]
        )
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


async def _rows(reader: Reader, planned: ArchiveFile) -> int | BadFileError:
    try:
        return await reader.row_count(planned)
    except BadFileError as exc:
        return exc  # reported in listing order, after every read is done
