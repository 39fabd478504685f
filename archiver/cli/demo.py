"""``archiver demo``: the whole pipeline on this machine, loopback only (see :mod:`archiver.demo.demo`)."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--duration", default="20", show_default=True, help="Publish logs for this long: 20, 45s, 2m.")
@click.option("--keep-running", is_flag=True, help="Publish and archive until Ctrl-C instead.")
@click.option("--archive", "archive_url", help="Where to archive (default ./demo-archive).")
@click.option("--http-port", help="Port of /health and /metrics (default: a free port).")
def demo(duration: str, keep_running: bool, archive_url: str | None, http_port: str | None) -> None:
    """Try it without Fly: local NATS, Fly-shaped logs, the archiver, then a query (loopback only)."""
    from archiver.demo.demo import run_demo

    sys.exit(run_demo(duration, keep_running, archive_url, http_port))
