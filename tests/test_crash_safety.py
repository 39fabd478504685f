"""Issue 4: real kills, real outages, a full spool and NATS restarts — nothing lost, nothing twice."""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from harness import archived_payloads, normalise, read_archive, start_archiver, unique_messages, wait_for
from test_table_readers import read_deltalake

from archiver.config import ArchiveSettings
from archiver.demo.publish import publish

batch = unique_messages


def check_exactly(settings: ArchiveSettings, sent: list[tuple[str, bytes]]) -> tuple[int, int]:
    """(losses, duplicates) of the archive against the messages that must be there exactly once."""
    want = Counter(normalise(p) for _, p in sent)
    got = archived_payloads(read_archive(settings))
    losses = sum((want - got).values())
    duplicates = sum((got - want).values())
    return losses, duplicates


@pytest.mark.timeout(240)
def test_kill_9_at_random_moments_loses_nothing_and_duplicates_nothing(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("KILL_SEED", "4")))
    spool = str(tmp_path / "spool")
    must_have: list[tuple[str, bytes]] = []  # received in full before the kill
    maybe: list[tuple[str, bytes]] = []  # published while the kill could land
    received_before_kills = 0
    kills = 0
    for round_no in range(20):
        long_interval = round_no % 3 == 2
        env = {"SPOOL_DIR": spool, "FLUSH_INTERVAL": "1h" if long_interval else "150ms",
               "FLUSH_BYTES": "64KiB", "SPOOL_FSYNC_INTERVAL": "50ms"}  # fmt: skip
        proc = start_archiver(nats_server.url, local_settings, tmp_path / f"r{round_no}", **env)
        proc.wait_subscribed()
        messages = batch(round_no, rng.randrange(500, 2500))
        if round_no % 4 == 3:
            # Kill while messages are still arriving: only the counted ones are owed.
            thread = threading.Thread(
                target=lambda m=messages: asyncio.run(publish(nats_server.url, m, 20_000))
            )
            thread.start()
            time.sleep(rng.uniform(0.02, 0.08))
            received = proc.metric("archiver_messages_received_total")
            proc.kill()
            thread.join()
            maybe += messages
            received_before_kills += int(received)
        else:
            assert asyncio.run(publish(nats_server.url, messages)) == len(messages)
            owed = len(messages)
            wait_for(lambda p=proc, n=owed: p.metric("archiver_messages_received_total") >= n, 30,
                     "messages received", proc)  # fmt: skip
            time.sleep(rng.uniform(0.0, 0.4))  # lands before, during or after uploads
            proc.kill()
            must_have += messages
        kills += 1
    final = start_archiver(nats_server.url, local_settings, tmp_path / "final", SPOOL_DIR=spool,
                           FLUSH_INTERVAL="150ms")  # fmt: skip
    final.wait_subscribed()
    assert final.stop() == 0, final.log()
    archived = archived_payloads(read_archive(local_settings))
    owed = Counter(normalise(p) for _, p in must_have)
    possible = owed + Counter(normalise(p) for _, p in maybe)
    losses = sum((owed - archived).values())
    duplicates = sum((archived - possible).values())
    from_maybe = sum(archived.values()) - sum(owed.values())
    print(
        f"\nkills={kills} messages_checked={sum(possible.values())} losses={losses} duplicates={duplicates}"
    )
    assert kills >= 20
    assert losses == 0 and duplicates == 0
    assert max(archived.values()) == 1 or all(archived[k] <= possible[k] for k in archived)
    assert from_maybe >= received_before_kills  # everything counted as received before a kill survived it
    assert (
        not list(Path(spool).glob("*.seg")) or sum(p.stat().st_size for p in Path(spool).glob("*.seg")) == 0
    )


@pytest.mark.timeout(180)
def test_storage_outage_then_recovery(nats_server: Any, seaweedfs: Any, s3_settings: ArchiveSettings,
                                      tmp_path: Path) -> None:  # fmt: skip
    # TABLE on (the default), committing every 5 s: the first batch's commit falls in the outage.
    proc = start_archiver(nats_server.url, s3_settings, tmp_path, FLUSH_INTERVAL="300ms",
                          STORAGE_FAILURE_GRACE="2s", TABLE_COMMIT_INTERVAL="5s")  # fmt: skip
    sent: list[tuple[str, bytes]] = []
    try:
        proc.wait_subscribed()
        first = batch(1, 3000)
        asyncio.run(publish(nats_server.url, first))
        sent += first
        wait_for(
            lambda: proc.metric("archiver_messages_archived_total") >= len(sent), 30, "first batch", proc
        )
        seaweedfs.stop()
        outage_started = time.monotonic()
        uncommitted = proc.metric("archiver_table_uncommitted_files")
        during = batch(2, 6000)
        asyncio.run(publish(nats_server.url, during, 1000))  # six seconds of traffic while storage is down
        sent += during
        wait_for(lambda: proc.health()[0] == 503, 30, "/health 503", proc)
        _, report = proc.health()
        assert "storage failing" in report["reason"]
        assert proc.metric("archiver_spool_bytes") > 0
        assert proc.metric("archiver_oldest_unarchived_age_seconds") > 1
        if uncommitted:  # uploaded before the outage, not committed yet: its commit fails, its files wait
            wait_for(
                lambda: proc.metric("archiver_table_commit_failures_total") >= 1, 30, "a failed commit", proc
            )
            assert proc.metric("archiver_table_uncommitted_files") >= uncommitted
        time.sleep(max(0.0, 20 - (time.monotonic() - outage_started)))
        seaweedfs.start()
        after = batch(3, 2000)
        asyncio.run(publish(nats_server.url, after))
        sent += after
        wait_for(lambda: proc.health()[0] == 200, 60, "/health 200 again", proc)
        wait_for(
            lambda: proc.metric("archiver_messages_archived_total") >= len(sent), 60, "backlog drained", proc
        )
        assert proc.metric("archiver_upload_errors_total") > 0
    finally:
        if not seaweedfs.running:
            seaweedfs.start()
        code = proc.stop()
    assert code == 0, proc.log()
    assert check_exactly(s3_settings, sent) == (0, 0)
    # Nothing lost, nothing committed twice: the table holds each row once.
    in_table = Counter(message for message, _ in read_deltalake(s3_settings))
    assert in_table == Counter(json.loads(p)["message"] for _, p in sent)


@pytest.mark.timeout(120)
def test_full_spool_drops_exactly_what_it_counts(nats_server: Any, local_settings: ArchiveSettings,
                                                 tmp_path: Path) -> None:  # fmt: skip
    proc = start_archiver(nats_server.url, local_settings, tmp_path, FLUSH_INTERVAL="1h", FLUSH_BYTES="64MiB",
                          SPOOL_MAX_BYTES="400KiB")  # fmt: skip
    messages = batch(5, 4000)  # ~1.4 MB: most cannot fit
    try:
        proc.wait_subscribed()
        asyncio.run(publish(nats_server.url, messages, 20_000))
        wait_for(lambda: proc.metric("archiver_messages_received_total")
                 + proc.metric("archiver_messages_dropped_total", '{reason="spool_full"}') >= len(messages),
                 30, "all messages accounted for", proc)  # fmt: skip
        dropped = proc.metric("archiver_messages_dropped_total", '{reason="spool_full"}')
        assert dropped > 0
    finally:
        assert proc.stop() == 0, proc.log()
    archived = sum(archived_payloads(read_archive(local_settings)).values())
    assert len(messages) - archived == dropped
    assert sum(1 for line in proc.log().splitlines() if "spool full" in line) <= 3  # rate-limited


@pytest.mark.timeout(120)
def test_nats_restart_reconnects_and_archives_everything(nats_server: Any, local_settings: ArchiveSettings,
                                                         tmp_path: Path) -> None:  # fmt: skip
    proc = start_archiver(nats_server.url, local_settings, tmp_path, FLUSH_INTERVAL="300ms")
    sent: list[tuple[str, bytes]] = []
    try:
        proc.wait_subscribed()
        before = batch(7, 2000)
        asyncio.run(publish(nats_server.url, before))
        sent += before
        wait_for(lambda: proc.metric("archiver_messages_received_total") >= len(sent), 30, "received", proc)
        nats_server.stop()
        wait_for(lambda: proc.health()[1]["nats"]["connected"] is False, 30, "disconnect seen", proc)
        nats_server.start()
        wait_for(lambda: proc.metric("archiver_nats_reconnects_total") >= 1, 30, "reconnect", proc)
        proc.wait_subscribed()
        after = batch(8, 2000)
        asyncio.run(publish(nats_server.url, after))
        sent += after
        wait_for(lambda: proc.metric("archiver_messages_received_total") >= len(sent), 30, "received", proc)
    finally:
        assert proc.stop() == 0, proc.log()
    assert check_exactly(local_settings, sent) == (0, 0)


def test_second_archiver_on_same_spool_refuses(nats_server: Any, local_settings: ArchiveSettings,
                                               tmp_path: Path) -> None:  # fmt: skip
    spool = str(tmp_path / "shared-spool")
    first = start_archiver(nats_server.url, local_settings, tmp_path / "a", SPOOL_DIR=spool)
    try:
        first.wait_subscribed()
        second = start_archiver(nats_server.url, local_settings, tmp_path / "b", SPOOL_DIR=spool)
        assert second.proc.wait(30) == 1
        assert "in use by another archiver" in second.log()
    finally:
        assert first.stop() == 0
    shutil.rmtree(spool)
