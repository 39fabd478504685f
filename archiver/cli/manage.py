"""The archive-management commands: ``compact``, ``prune``, ``import`` and ``stats``.

Plain click commands that :mod:`archiver.cli.main` adds to the ``archiver`` group
(whose error handling they share); heavy modules are imported inside each
command so that ``archiver --help`` and the other commands start fast.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings
    from archiver.manage.compact_table import TableLink

from archiver.cli.options import app_option, archive_option, env_help, open_archive, run_on_archive, say, when


@click.command()
@app_option
@click.option(
    "--before",
    default="2h",
    show_default=True,
    help="Compact the hours that ended before this: 3h, 1d, 2026-11-24T13:00.",
)
@click.option(
    "--target-bytes", help=env_help("Largest compacted file (default 256MiB).", "COMPACT_TARGET_BYTES")
)
@archive_option
def compact(apps: tuple[str, ...], before: str, target_bytes: str | None, archive_url: str | None) -> None:
    """Merge the files of each closed app-hour into one sorted file, then each closed app-day (safe while queries run)."""
    from archiver.environment import load_compact_target_bytes
    from archiver.manage.compact import compact_archive
    from archiver.units import format_bytes

    target = load_compact_target_bytes(target_bytes)
    before_ns = when(before, "--before")
    settings, storage = open_archive(archive_url)
    # The table is opened once the storage answered: delta-rs takes ~15 s to give up on an endpoint that is down.
    s = run_on_archive(
        storage, lambda: compact_archive(storage, apps, before_ns, target, say, table=_table_link(settings))
    )
    click.echo(
        f"compacted {s.compacted} of {s.partitions} closed app-hours: {s.files_in} files "
        f"({format_bytes(s.bytes_in)}) -> {s.files_out} ({format_bytes(s.bytes_out)}), {s.rows} rows; "
        f"{s.deleted} files deleted"
        + (
            f"; rolled up {s.days_rolled_up} closed app-days: {s.day_files_in} files -> {s.day_files_out}"
            if s.days_rolled_up
            else ""
        )
        + (f"; {s.skipped} app-hours skipped" if s.skipped else ""),
        err=True,
    )


@click.command()
@click.option(
    "--older-than", required=True, help="Retention: delete partitions older than this (30d, 12w, 90d)."
)
@app_option
@click.option("--dry-run", is_flag=True, help="Print what would be deleted; delete nothing.")
@archive_option
def prune(older_than: str, apps: tuple[str, ...], dry_run: bool, archive_url: str | None) -> None:
    """Delete whole hour and day partitions whose logs are all older than the retention (by event time)."""
    from archiver.manage.prune import prune as prune_archive
    from archiver.units import duration_setting, format_bytes

    seconds = duration_setting("--older-than", older_than, 0.0, allow_zero=True)
    cutoff_ns = time.time_ns() - int(seconds * 1e9)
    settings, storage = open_archive(archive_url)
    s = run_on_archive(
        storage,
        lambda: prune_archive(
            storage, apps, cutoff_ns, dry_run=dry_run, say=say, table=_table_link(settings)
        ),
    )
    verb = "would prune" if dry_run else "pruned"
    click.echo(f"{verb} {s.prefixes} partitions: {s.files} files, {format_bytes(s.bytes)}", err=True)


@click.command("import")
@click.argument("sources", nargs=-1, required=True)
@archive_option
def import_command(sources: tuple[str, ...], archive_url: str | None) -> None:
    """Backfill from Fly log JSON lines: files, directories, - (stdin) or s3://bucket/prefix; plain, .gz, .zst."""
    from archiver.environment import load_archive_settings
    from archiver.manage.importer import run_import
    from archiver.storage.open import open_storage
    from archiver.table.writer import ArchiveTable
    from archiver.units import format_bytes

    # Not open_archive: an import may be what creates the archive.
    settings = load_archive_settings(archive_url)
    storage = open_storage(settings)
    # None: plain files (TABLE=off, or no archive yet); opened once the storage answered (see compact).
    s = run_on_archive(storage, lambda: run_import(list(sources), storage, table=ArchiveTable.open(settings)))
    blank = f", {s.blank} blank lines skipped" if s.blank else ""
    added = "" if s.added is None else f"; {s.added} files added to the Delta table"
    click.echo(
        f"imported {s.sources} sources ({format_bytes(s.bytes_read)}): {s.lines} lines into {s.written} new "
        f"files ({s.existing} already there); {s.malformed} malformed lines archived as raw text{blank}{added}",
        err=True,
    )


@click.command()
@app_option
@click.option("--since", default="7d", show_default=True, help="From this time on: 1d, 2w, 2026-11-01.")
@click.option(
    "--hours",
    default=48,
    show_default=True,
    type=click.IntRange(min=0),
    help="Hours in the volume chart (the newest with logs); 0 for none.",
)
@archive_option
@click.option(
    "--strict",
    is_flag=True,
    help="Fail (exit 1) at a file that is not an archive file instead of skipping it.",
)
def stats(apps: tuple[str, ...], since: str, hours: int, archive_url: str | None, strict: bool) -> None:
    """Files, rows, bytes and compression per app and day, and a chart of log volume per hour."""
    from archiver.manage.stats import collect, print_report

    since_ns = when(since, "--since")
    settings, storage = open_archive(archive_url)
    asyncio.run(storage.close())  # only the existence check; stats reads through pyarrow
    warn = functools.partial(click.echo, err=True)
    print_report(asyncio.run(collect(settings, apps, since_ns, hours, warn, strict)), sys.stdout)


def _table_link(settings: ArchiveSettings) -> TableLink | None:
    """The archive's Delta table for a command that changes files; None when it is plain files (TABLE=off)."""
    from archiver.manage.compact_table import TableLink
    from archiver.table.writer import ArchiveTable

    handle = ArchiveTable.open(settings)
    return None if handle is None else TableLink(lambda: handle)
