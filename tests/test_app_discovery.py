"""Every app is found: by ``archiver query`` with no ``--app``, and by ``--app`` with each name ``archiver ls`` prints.

Issue 13's two name bugs: an app whose name was too long for a key (shortened
to ``<prefix>~<hash>``) was left out of a query without ``--app`` (the planner
re-encoded the listed segment into another one), and the name ``archiver ls``
printed for it found nothing with ``--app``. The archive is written by
``archiver import`` (the live encoder and the current layout), so the test
holds for whatever layout the code writes.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
import pytest
from click.testing import Result
from harness import cli_on, normalise

from archiver.demo.flymessage import fly_record

APPS = [
    "sandwich",
    "x" * 300,  # ASCII, too long for a key
    "ü" * 100,  # 200 bytes of UTF-8: too long escaped in every layout
    "日本-" * 60,
    "a b/c=d%" * 40,
    "über-app",
    "a=b",
    "100%",
    "a/b",
    "..",
    "",
    "__HIVE_DEFAULT_PARTITION__",
]
RANGE = ["--since", "2026-11-20", "--until", "2026-11-26"]


def lines() -> dict[str, list[bytes]]:
    """Three messages per app, in two hours of 2026-11-24, regions dfw and ams."""
    out: dict[str, list[bytes]] = {}
    for index, app in enumerate(APPS):
        batch = []
        for i in range(3):
            stamp = f"2026-11-24T1{3 + i % 2}:0{i}:00.00000{index % 10}{i}0Z"
            region = "dfw" if i % 2 else "ams"
            batch.append(
                orjson.dumps(fly_record(app, region, f"message {i} of app #{index}", stamp, instance="i1"))
            )
        out[app] = batch
    return out


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[bytes]]]:
    root = tmp_path_factory.mktemp("names") / "archive"
    sent = lines()
    cli_on(root, "import", "-", data=b"".join(line + b"\n" for batch in sent.values() for line in batch))
    return root, sent


def payloads(result: Result) -> Counter[bytes]:
    return Counter(normalise(line) for line in result.stdout_bytes.splitlines())


def test_every_app_is_found_without_app(archive: tuple[Path, dict[str, list[bytes]]]) -> None:
    root, sent = archive
    everything = Counter(normalise(line) for batch in sent.values() for line in batch)
    assert payloads(cli_on(root, "query", *RANGE, "--format", "json")) == everything


def test_every_name_ls_prints_works_with_app(archive: tuple[Path, dict[str, list[bytes]]]) -> None:
    root, sent = archive
    names = cli_on(root, "ls").stdout.split("\n")[:-1]
    assert len(names) >= len(APPS) - 1  # "" and a literal __HIVE_DEFAULT_PARTITION__ may share a line or not
    found: Counter[bytes] = Counter()
    for name in dict.fromkeys(names):
        rows = payloads(cli_on(root, "query", "--app", name, *RANGE, "--format", "json"))
        assert rows, f"archiver ls printed {name!r}, which finds nothing with --app"
        hours = cli_on(root, "ls", "--app", name).stdout
        assert "2026-11-24T13:00Z" in hours, (name, hours)
        found |= rows
    assert found == Counter(normalise(line) for batch in sent.values() for line in batch)


@pytest.mark.parametrize("app", APPS)
def test_every_full_name_works_with_app(archive: tuple[Path, dict[str, list[bytes]]], app: str) -> None:
    root, sent = archive
    rows = payloads(cli_on(root, "query", "--app", app, *RANGE, "--format", "json"))
    assert rows == Counter(normalise(line) for line in sent[app])
