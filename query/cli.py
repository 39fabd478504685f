"""``archiver query`` and ``archiver ls``: the click commands (wired into :mod:`archiver.cli.main`).

Arguments are checked before anything is read (bad ones exit 2 with one
line); heavy imports (pyarrow, the S3 client) happen only inside a command so
``archiver run`` and ``--help`` stay quick.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import click

from archiver.archive_url import ARCHIVE_URL_HELP
from archiver.environment import load_archive_settings
from archiver.errors import OutputError, UsageError
from archiver.timespec import now_ns, parse_when, resolve_range

if TYPE_CHECKING:
    from query.listing import LsRequest
    from query.run import QueryRequest

_STRICT_HELP = (
    "Fail (exit 1, one line naming it) at the first file that is not a readable archive file, "
    "instead of skipping it with a warning. Rows already printed stay printed."
)
_WHERE_HELP = (
    "Condition on a field of the app's JSON message, repeatable (all must hold): FIELD OP VALUE with "
    "OP one of = != < <= > >= ~ (RE2) !~, or has:FIELD / !has:FIELD. FIELD is a dotted path "
    "(user.id, req.headers.x-request-id; quote a key holding dots: '\"a.b\".c'). An unquoted number "
    'compares numerically with JSON numbers, anything else as text; a quoted "value" is always text. '
    "Messages that are not JSON objects never match."
)
_COUNT_HELP = (
    "Count the matching logs per time bucket instead of printing them: a table and a bar chart "
    "(--format json or csv: one row per bucket and group)."
)
_BY_HELP = (
    "With --count: a count per app, region, instance, level, provider, host or field:PATH (a JSON field)."
)
_EVERY_HELP = "With --count: bucket width (30s, 5m, 1h, 1d; buckets aligned to UTC); default: about 40 buckets over the range."
_TOP_HELP = (
    "Print the N most frequent message patterns (numbers, hex ids, UUIDs, IPs and quoted values "
    "collapsed) with their counts, first and last time seen and an example."
)
_FOLLOW_HELP = (
    "Print what matches so far, then keep printing new logs as the archive receives them (polled every "
    "second; new logs appear within one flush interval of the service, FLUSH_INTERVAL) until Ctrl-C. "
    "Combine with --tail N for `tail -f`."
)
_WHEN_HELP = (
    "90s, 15m, 1h, 2d, 1w back from now, or 2026-11-24, 2026-11-24T13:00, RFC 3339 (UTC unless offset)"
)


@click.command(context_settings={"max_content_width": 110})
@click.option("--app", "apps", multiple=True, help="App name; repeat for several (default: every app).")
@click.option("--region", "regions", multiple=True, help="Fly region, e.g. dfw; repeatable.")
@click.option("--instance", "instances", multiple=True, help="Machine (instance) id; repeatable.")
@click.option(
    "--level",
    "levels",
    multiple=True,
    help="Log level, the app's own when it logs JSON (any case); repeatable.",
)
@click.option("--since", help=f"Start, inclusive (default 1h): {_WHEN_HELP}.")
@click.option("--until", help="End, exclusive (default now). Same forms as --since.")
@click.option("--grep", help="Regular expression (RE2 syntax) the message must match.")
@click.option("--contains", help="Literal text the message must contain.")
@click.option("--ignore-case", "-i", is_flag=True, help="Case-insensitive --grep and --contains.")
@click.option("--where", "where", multiple=True, metavar="COND", help=_WHERE_HELP)
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N logs.")
@click.option("--tail", type=click.IntRange(min=1), help="Only the newest N logs (printed oldest first).")
@click.option(
    "--format",
    "output_format",
    default="text",
    help="text (default), json, csv, or parquet (needs --output or a pipe).",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to this file instead of stdout.")
@click.option("--archive", "archive_url", help=ARCHIVE_URL_HELP)
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
@click.option("--count", is_flag=True, help=_COUNT_HELP)
@click.option("--by", metavar="WHAT", help=_BY_HELP)
@click.option("--every", metavar="DURATION", help=_EVERY_HELP)
@click.option("--top", type=click.IntRange(min=1), metavar="N", help=_TOP_HELP)
@click.option("--follow", "-f", is_flag=True, help=_FOLLOW_HELP)
def query_command(**options: Any) -> None:
    """Print archived logs in time order, like `fly logs`, filtered by app, region, time, text and JSON fields.

    Names, and message text on a terminal, are shown with control characters made visible
    (\\x1b, \\n...); json, csv, parquet and text sent to a pipe or file keep the exact bytes.

    \b
    Examples:
      archiver query --app api --since 1h --where 'status>=500' --where user.id=42
      archiver query --since 1d --level error --count --every 1h --by app
      archiver query --app api --since 1d --top 20
      archiver query --app api --tail 20 --follow
    """
    request = _query_request(options, now_ns())
    run: Callable[[QueryRequest], Coroutine[Any, Any, int]]
    if request.count is not None:
        from query.count import run_count

        run = run_count
    elif request.top is not None:
        from query.patterns import run_top

        run = run_top
    elif request.follow:
        from query.follow import run_follow

        run = run_follow
    else:
        from query.run import run_query

        run = run_query

    try:
        code = asyncio.run(run(request))
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, and keep Python from complaining at exit.
        _drop_stdout()
        code = 0
    except OutputError:
        if request.output is None:
            _drop_stdout()  # stdout failed (disk full): its buffer must not fail again at exit
        raise
    if code:
        sys.exit(code)


def _drop_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):  # ValueError: io.UnsupportedOperation, no real fd
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


#: Options whose values go to Arrow or into keys: they must be text (a shell can pass any bytes).
_TEXT_OPTIONS = {
    "apps": "--app",
    "regions": "--region",
    "instances": "--instance",
    "levels": "--level",
    "grep": "--grep",
    "contains": "--contains",
    "since": "--since",
    "until": "--until",
    "where": "--where",
    "by": "--by",
    "every": "--every",
}
#: Options where an empty value is a mistake (an unset shell variable), not "the default".
_NOT_EMPTY = ("since", "until", "archive_url", "output", "by", "every")


def check_text_options(options: dict[str, Any]) -> None:
    """UsageError for an option value that is empty where that means nothing, or is not valid UTF-8."""
    for name in _NOT_EMPTY:
        value = options.get(name)
        if value is not None and not value.strip():
            flag = "--archive" if name == "archive_url" else f"--{name}"
            raise UsageError(f"{flag}: empty value")
    for name, flag in _TEXT_OPTIONS.items():
        value = options.get(name)
        for text in value if isinstance(value, tuple) else (value,):
            if text is None:
                continue
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # Undecodable bytes arrive as surrogate escapes; show them as the bytes they were.
                shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                raise UsageError(f"{flag}: not valid UTF-8: {shown!r}") from None


def _query_request(options: dict[str, Any], now: int) -> QueryRequest:
    from query.format import check_format
    from query.run import QueryRequest

    check_text_options(options)
    fmt = check_format(options["output_format"])
    if options["limit"] is not None and options["tail"] is not None:
        raise UsageError("--limit and --tail cannot be combined")
    from query.modes import check_modes

    modes = check_modes(options, fmt)
    since_ns, until_ns = resolve_range(options["since"], None if modes.follow else options["until"], now)
    if options["grep"] is not None:
        from query.filters import check_regex

        check_regex(options["grep"])
    if fmt == "parquet" and options["output"] is None and sys.stdout.isatty():
        raise UsageError("--format parquet writes binary: give --output FILE or redirect stdout")
    return QueryRequest(
        archive=load_archive_settings(options["archive_url"]),
        apps=tuple(options["apps"]),
        regions=tuple(options["regions"]),
        instances=tuple(options["instances"]),
        levels=tuple(options["levels"]),
        since_ns=since_ns,
        until_ns=until_ns,
        grep=options["grep"],
        contains=options["contains"],
        ignore_case=options["ignore_case"],
        limit=options["limit"],
        tail=options["tail"],
        output_format=fmt,
        output=options["output"],
        strict=options.get("strict", False),
        where=modes.where,
        count=modes.count,
        top=modes.top,
        follow=modes.follow,
    )


@click.command(context_settings={"max_content_width": 110})
@click.option("--app", "apps", multiple=True, help="List this app's hours (files, rows, bytes); repeatable.")
@click.option("--since", help=f"Only hours from this time on (default: all): {_WHEN_HELP}.")
@click.option("--archive", "archive_url", help=ARCHIVE_URL_HELP)
@click.option("--strict", is_flag=True, help=_STRICT_HELP)
def ls_command(apps: tuple[str, ...], since: str | None, archive_url: str | None, strict: bool) -> None:
    """List the apps in the archive, or with --app the hours that hold files, with rows and bytes."""
    from query.listing import LsRequest, run_ls

    check_text_options({"apps": apps, "since": since, "archive_url": archive_url})
    now = now_ns()
    since_ns = parse_when(since, now, option="--since") if since is not None else None
    request: LsRequest = LsRequest(load_archive_settings(archive_url), apps, since_ns, now, strict)
    try:
        asyncio.run(run_ls(request))
    except BrokenPipeError:
        _drop_stdout()
