"""Real lake engines read the table: every row exactly once after each step, locally and on SeaweedFS.

Engines: DuckDB 1.5.5 ``delta_scan`` (the delta and httpfs extensions loaded from their PyPI
packages' files: autoinstall and autoload off, an extension directory that stays empty),
Polars ``scan_delta``, deltalake's pyarrow table, and DataFusion (the delta-rs table provider
locally; ``register_dataset(to_pyarrow_dataset())`` on S3, where the provider cannot reach the
data files: FINDINGS §6). Polars reads S3 through pyarrow (``use_pyarrow=True``): its native
reader requests non-ASCII keys still percent-encoded and gets 404 (FINDINGS §6).

Steps: bootstrap of existing files, an append, its replay, a compaction, a checkpoint and a
prune, a vacuum. Every message is a unique id, so a reader's answer is compared row by row.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from deltalake import DeltaTable
from servers import SeaweedFS
from table_files import ids, live, parse_key, put_v2

from archiver.config import ArchiveSettings
from archiver.storage.interface import Storage
from archiver.table import upkeep
from archiver.table.bootstrap import register_existing
from archiver.table.location import storage_options, table_uri
from archiver.table.log import read_snapshot
from archiver.table.writer import ArchiveTable

D1, D2 = "2024-01-02", "2024-01-03"
Rows = list[tuple[str, str | None]]


def extension_file(package: str, name: str) -> str:
    """The extension file a PyPI package ships: <package>/extensions/v<duckdb version>/<name>.duckdb_extension."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.origin is not None, f"install the test extras: {package}"
    path = os.path.join(
        os.path.dirname(spec.origin), "extensions", f"v{duckdb.__version__}", f"{name}.duckdb_extension"
    )
    assert os.path.exists(path), f"{package} has no extension for DuckDB {duckdb.__version__}"
    return path


@pytest.fixture(scope="module")
def duck(
    tmp_path_factory: pytest.TempPathFactory, seaweedfs: SeaweedFS
) -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB connection with delta + httpfs loaded from their files and a secret for SeaweedFS."""
    extensions = tmp_path_factory.mktemp("duckdb-extensions")
    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": "false",
            "autoload_known_extensions": "false",
            "extension_directory": str(extensions),
        }
    )
    con.execute(f"LOAD '{extension_file('duckdb_extension_httpfs', 'httpfs')}'")
    con.execute(f"LOAD '{extension_file('duckdb_extension_delta', 'delta')}'")
    endpoint = seaweedfs.endpoint_url.removeprefix("http://")
    con.execute(
        f"CREATE SECRET seaweed (TYPE s3, PROVIDER config, KEY_ID '{seaweedfs.access_key}', "
        f"SECRET '{seaweedfs.secret_key}', ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
    yield con
    con.close()
    assert list(Path(extensions).iterdir()) == []  # nothing was downloaded or installed


def read_duckdb(con: duckdb.DuckDBPyConnection, settings: ArchiveSettings) -> Rows:
    return con.execute(f"SELECT message, app FROM delta_scan('{table_uri(settings)}')").fetchall()


def read_polars(settings: ArchiveSettings) -> Rows:
    import polars as pl

    s3 = settings.scheme == "s3"
    frame = pl.scan_delta(table_uri(settings), storage_options=storage_options(settings), use_pyarrow=s3)
    return list(frame.select("message", "app").collect().iter_rows())


def read_deltalake(settings: ArchiveSettings) -> Rows:
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    table = delta.to_pyarrow_table(columns=["message", "app"])
    return list(zip(table.column("message").to_pylist(), table.column("app").to_pylist(), strict=True))


def read_datafusion(settings: ArchiveSettings) -> Rows:
    from datafusion import SessionContext

    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    ctx = SessionContext()
    if settings.scheme == "s3":
        ctx.register_dataset("archive", delta.to_pyarrow_dataset())
    else:
        ctx.register_table("archive", delta)
    table = ctx.sql("SELECT message, app FROM archive").to_arrow_table()
    return list(zip(table.column("message").to_pylist(), table.column("app").to_pylist(), strict=True))


def null_app(rows: Rows) -> list[tuple[str, str | None]]:
    """Rows sorted, the empty app as NULL (Delta's meaning of ""; the delta-rs provider returns "")."""
    return sorted((message, app or None) for message, app in rows)


async def test_engines_read_each_row_exactly_once_at_every_step(
    empty_archive: tuple[ArchiveSettings, Storage], duck: duckdb.DuckDBPyConnection
) -> None:
    settings, storage = empty_archive
    readers: dict[str, Callable[[], Rows]] = {
        "duckdb": lambda: read_duckdb(duck, settings),
        "polars": lambda: read_polars(settings),
        "deltalake": lambda: read_deltalake(settings),
        "datafusion": lambda: read_datafusion(settings),
    }
    expected: dict[str, str] = {}

    async def check(step: str) -> None:
        want = null_app([(m, a) for m, a in expected.items()])
        for name, read in readers.items():
            assert null_app(read()) == want, f"{name} after {step}"
        snapshot = await read_snapshot(storage)
        assert snapshot is not None
        live_keys = {f.key for f in snapshot.files}
        delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
        assert sum(delta.get_add_actions(flatten=True).column("num_records").to_pylist()) == len(expected), (
            step
        )
        assert len(live_keys) == len(delta.get_add_actions(flatten=True)), step

    def add(app: str, messages: list[str]) -> None:
        expected.update(dict.fromkeys(messages, app))

    # 1. Existing files become version 0.
    web = [
        await put_v2(storage, "web", D1, f"20240102T03000{i}Z-w1-{i}", ids(f"web{i}", 3)) for i in range(2)
    ]
    uber = await put_v2(storage, "über", D1, "20240102T030000Z-w1-3", ids("über", 2))
    for messages, app in ((ids("web0", 3), "web"), (ids("web1", 3), "web"), (ids("über", 2), "über")):
        add(app, messages)
    assert (await register_existing(settings, storage, parse_key)).registered == 3
    await check("bootstrap")
    table = ArchiveTable.open(settings)
    assert table is not None

    # 2. An append of a flush (hostile app names), then its replay after a "restart".
    batch = [
        await put_v2(storage, app, D2, "20240103T040000Z-w1-9", ids(f"b-{app}", 2))
        for app in ("a/b", "", "x:y")
    ]
    assert table.commit_adds(batch, "w1", 9)
    for app in ("a/b", "", "x:y"):
        add(app, ids(f"b-{app}", 2))
    await check("append")
    assert not table.commit_adds(batch, "w1", 9)
    await check("replayed append")

    # 3. A compaction of web's two files into one.
    merged = await put_v2(storage, "web", D1, "20240102T03-c-0123abcd-1of1", ids("web0", 3) + ids("web1", 3))
    table.commit_compaction([live(f) for f in web], [merged])
    await check("compaction")

    # 4. A checkpoint, then a prune of über's day (a remove after the checkpoint).
    upkeep.checkpoint(table)
    table.commit_removes([live(uber)])
    for message in ids("über", 2):
        del expected[message]
    await check("prune")

    # 5. Vacuum deletes the removed files; readers are unaffected.
    deleted = upkeep.vacuum(table, retention_hours=0)
    assert len(deleted) == 3  # web's two inputs and über's file
    await check("vacuum")

    # Exact microsecond stats: file skipping by min/max never drops a boundary row.
    last = dt.datetime(2024, 1, 2, 3, 0, 5, 5, tzinfo=dt.UTC)  # merged's 6th row: start + 5 s + 5 µs
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    import pyarrow.dataset as pads

    dataset = delta.to_pyarrow_dataset()
    on_d1 = pads.field("date") == dt.date(2024, 1, 2)
    found = dataset.to_table(filter=on_d1 & (pads.field("timestamp") >= last), columns=["message"])
    assert found.column("message").to_pylist() == ["web1-2"]
    import polars as pl

    if settings.scheme == "file":  # Polars' native reader skips files by the same stats
        frame = pl.scan_delta(table_uri(settings)).filter(
            (pl.col("app") == "web") & (pl.col("timestamp") >= last)
        )
        assert frame.select("message").collect().to_series().to_list() == ["web1-2"]
