"""A conflict storm against the service's commits: every row committed exactly once, none lost.

Three outside processes commit to the archive's table as fast as it takes them (each commit
carries an app transaction, which delta-rs treats as conflicting with every concurrent one),
while an archiver with two workers ingests and commits every 300 ms. The service's commits lose
race after race; whatever they could not commit stays in the spool until the storm is over.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import table_workers
from harness import start_archiver, wait_for
from test_service_compaction import all_subscribed, metric_sum
from test_table_readers import read_deltalake
from test_table_service import messages_of

from archiver.config import ArchiveSettings
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import publish

STORMERS = 3
STORM_S = 5.0


@pytest.mark.timeout(180)
def test_a_conflict_storm_loses_and_doubles_nothing(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    batches = [FlyLogGenerator(seed=40 + i, apps=3, regions=2).messages(250) for i in range(5)]
    want = messages_of(*batches)
    env = {"FLUSH_INTERVAL": "200ms", "TABLE_COMMIT_INTERVAL": "300ms"}
    proc = start_archiver(nats_server.url, local_settings, tmp_path / "a", ["--workers", "2"], **env)
    spawn = multiprocessing.get_context("spawn")  # deltalake's runtime panics in a forked child
    try:
        wait_for(lambda: all_subscribed(proc), 60, "both workers subscribed", proc)
        wait_for(lambda: (Path(local_settings.prefix) / "_delta_log").exists(), 30, "the table created", proc)
        with ProcessPoolExecutor(STORMERS, mp_context=spawn) as pool:
            stop_at = time.time() + STORM_S + 2  # spawning and importing take ~2 s
            storms = [
                pool.submit(table_workers.storm, local_settings, f"storm-{i}", stop_at)
                for i in range(STORMERS)
            ]
            for batch in batches:  # published through the storm
                assert asyncio.run(publish(nats_server.url, batch)) == len(batch)
                time.sleep(STORM_S / len(batches))
            stormed = sum(f.result(timeout=60) for f in storms)
        committed = lambda: sum(Counter(m for m, _ in read_deltalake(local_settings)).values())  # noqa: E731
        wait_for(lambda: committed() == sum(want.values()), 90, "every row committed after the storm", proc)
        commits = metric_sum(proc, "archiver_table_commits_total")
        failures = metric_sum(proc, "archiver_table_commit_failures_total")
        wait_for(
            lambda: metric_sum(proc, "archiver_table_uncommitted_files") == 0, 30, "nothing waiting", proc
        )
    finally:
        assert proc.stop() == 0, proc.log()
    print(f"\nstorm commits={stormed} service commits={commits:.0f} failed={failures:.0f}")
    assert stormed >= 20, stormed  # it was a storm
    assert commits >= 2
    assert Counter(m for m, _ in read_deltalake(local_settings)) == want
