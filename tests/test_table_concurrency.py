"""Several processes committing to one table at once: no add lost, and never two compactions of one input.

Processes are spawned, never forked: deltalake's runtime panics in a forked child.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

import pytest
import table_workers
from deltalake import DeltaTable
from table_files import ids, live, put_v2

from archiver.config import ArchiveSettings
from archiver.storage.interface import Storage
from archiver.table.bootstrap import create_table
from archiver.table.location import storage_options, table_uri
from archiver.table.log import read_snapshot

BATCHES = 8
FILES_PER_BATCH = 2
ROUNDS = 4


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    """Two spawned worker processes for the module (spawning costs ~1 s each)."""
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as executor:
        for future in [executor.submit(table_workers.warm_up) for _ in range(2)]:
            future.result()
        yield executor


def table_rows(settings: ArchiveSettings) -> list[str]:
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    return sorted(delta.to_pyarrow_table(columns=["message"]).column("message").to_pylist())


async def test_two_processes_appending_lose_no_add(
    empty_archive: tuple[ArchiveSettings, Storage], pool: ProcessPoolExecutor
) -> None:
    settings, storage = empty_archive
    assert create_table(settings, [])
    batches = {
        writer: [
            [await put_v2(storage, "web", "2024-01-02", f"{writer}-{b}-{i}", [f"{writer}-{b}-{i}"]) for i in range(FILES_PER_BATCH)]
            for b in range(BATCHES)
        ]
        for writer in ("w1", "w2")
    }  # fmt: skip
    go_at = time.time() + 0.5
    futures = {w: pool.submit(table_workers.append, settings, w, batches[w], go_at) for w in batches}
    assert {w: f.result(timeout=120) for w, f in futures.items()} == {w: [True] * BATCHES for w in batches}
    expected = sorted(f.key for w in batches for batch in batches[w] for f in batch)
    snapshot = await read_snapshot(storage)
    assert snapshot is not None
    assert [f.key for f in snapshot.files] == expected
    assert snapshot.version == 2 * BATCHES
    assert len(table_rows(settings)) == len(expected)
    delta = DeltaTable(table_uri(settings), storage_options=storage_options(settings))
    assert delta.transaction_version("w1") == delta.transaction_version("w2") == BATCHES


async def test_two_compactors_of_the_same_inputs_one_wins(
    empty_archive: tuple[ArchiveSettings, Storage], pool: ProcessPoolExecutor
) -> None:
    settings, storage = empty_archive
    assert create_table(settings, [])
    expected: list[str] = []
    for r in range(ROUNDS):
        date = f"2024-01-{r + 10:02d}"
        inputs = [await put_v2(storage, "web", date, f"in-{i}", ids(f"{r}-{i}", 2)) for i in range(3)]
        messages = [m for i in range(3) for m in ids(f"{r}-{i}", 2)]
        outputs = [await put_v2(storage, "web", date, f"out-{who}", messages) for who in ("a", "b")]
        table_workers.open_table(settings).commit_adds(inputs, "w", r + 1)
        go_at = time.time() + 0.4
        futures = [
            pool.submit(table_workers.compact, settings, [live(f) for f in inputs], out, go_at)
            for out in outputs
        ]
        results = [f.result(timeout=120) for f in futures]
        # Both passed the liveness check in every round measured: the app-day guard decided.
        assert sorted(result.split(":")[0] for result in results) == ["lost", "won"], f"round {r}: {results}"
        expected += messages
        assert table_rows(settings) == sorted(expected), f"round {r}: rows doubled or lost"
        snapshot = await read_snapshot(storage, dates=[date])
        assert snapshot is not None
        assert [f.key for f in snapshot.files] == [outputs[results.index("won")].key]
