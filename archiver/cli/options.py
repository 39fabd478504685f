"""What the ``archiver`` commands share: option help naming its variable, common options, running on an archive.

Imports stay light (click and the settings): ``archiver --help`` and
``archiver query`` load this module; the heavy ones happen inside commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import click

from archiver.archive_url import ARCHIVE_URL_HELP
from archiver.errors import ConfigError

if TYPE_CHECKING:
    from archiver.config import ArchiveSettings
    from archiver.storage.interface import Storage

T = TypeVar("T")

#: ``--archive``, the archive a management command works on.
archive_option = click.option("--archive", "archive_url", help=ARCHIVE_URL_HELP)
#: ``--app``, repeatable: the apps a management command works on (none: every app).
app_option = click.option(
    "--app", "apps", multiple=True, help="Only this app; repeatable (default: every app)."
)


def env_help(text: str, name: str) -> str:
    """An option's help naming the environment variable it defaults from (never its value)."""
    return f"{text} [env: {name}]"


def say(line: str) -> None:
    """One line of a command's report on stdout."""
    click.echo(line)


def when(text: str, option: str) -> int:
    """A WHEN argument (``3h``, ``2026-11-24T13:00``) as nanoseconds, meaning what it means to ``archiver query``."""
    from archiver.timespec import now_ns, parse_when

    return parse_when(text, now_ns(), option=option)


def open_archive(archive_url: str | None) -> tuple[ArchiveSettings, Storage]:
    """Settings and storage of an archive that must already exist (never creates a local directory)."""
    from archiver.environment import load_archive_settings
    from archiver.storage.open import open_storage, require_existing

    if archive_url is not None and not archive_url.strip():
        raise ConfigError("--archive: empty value")  # an unset shell variable, not "the default archive"
    settings = load_archive_settings(archive_url)
    require_existing(settings)
    return settings, open_storage(settings)


def run_on_archive(storage: Storage, work: Callable[[], Awaitable[T]]) -> T:
    """Check the archive, run ``work`` on it and close it, in one event loop; ``work``'s result."""

    async def checked() -> T:
        try:
            await storage.check()
            return await work()
        finally:
            await storage.close()

    return asyncio.run(checked())
