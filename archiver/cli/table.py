"""``archiver table``: the archive's Delta table by hand (``init``: make an existing archive a table)."""

from __future__ import annotations

import click

from archiver.cli.options import archive_option, open_archive, run_on_archive, say


@click.group("table")
def table() -> None:
    """The archive as a Delta Lake table (the service creates and maintains it by itself)."""


@table.command("init")
@archive_option
def init(archive_url: str | None) -> None:
    """Make an existing archive a Delta table: register its files (v2) without rewriting them."""
    from archiver.manage.table_init import describe, init_table

    settings, storage = open_archive(archive_url)
    registration, v1_files = run_on_archive(storage, lambda: init_table(settings, storage))
    for line in describe(settings.url, registration, v1_files):
        say(line)
