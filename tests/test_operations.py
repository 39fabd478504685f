"""Issue 5: /health transitions, /metrics against a known run, the stall watchdog, --workers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from harness import archived_payloads, read_archive, start_archiver, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_crash_safety import batch, check_exactly

from archiver.config import ArchiveSettings
from archiver.demo.publish import publish


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition (parsed by the official parser)."""
    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_health_follows_nats_and_metrics_match_the_run(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    proc = start_archiver(nats_server.url, local_settings, tmp_path, FLUSH_INTERVAL="200ms",
                          NATS_DISCONNECT_GRACE="1s", STALL_TIMEOUT="0")  # fmt: skip
    messages = batch(21, 3000)
    try:
        proc.wait_subscribed()
        status, report = proc.health()
        assert status == 200 and report["status"] == "ok" and report["nats"]["connected"]
        asyncio.run(publish(nats_server.url, messages))
        wait_for(
            lambda: proc.metric("archiver_messages_archived_total") >= len(messages), 30, "archived", proc
        )
        nats_server.stop()
        wait_for(lambda: proc.health()[0] == 503, 20, "503 after NATS stopped", proc)
        assert "NATS disconnected" in proc.health()[1]["reason"]
        nats_server.start()
        wait_for(lambda: proc.health()[0] == 200, 30, "200 after NATS restarted", proc)
        # Received after the reconnect too: the parser starts afresh, nats-py renews the subscription.
        later = batch(23, 500)
        asyncio.run(publish(nats_server.url, later))
        messages += later
        wait_for(
            lambda: proc.metric("archiver_messages_archived_total") >= len(messages), 30, "archived", proc
        )
        _, body = proc.get("/metrics")
        values = samples(body)
    finally:
        assert proc.stop() == 0, proc.log()
    files = read_archive(local_settings)
    assert values[("archiver_messages_received_total", ())] == len(messages)
    assert values[("archiver_messages_archived_total", ())] == len(messages)
    assert values[("archiver_bytes_received_total", ())] == sum(len(p) for _, p in messages)
    assert values[("archiver_files_written_total", ())] == len(files)
    assert values[("archiver_bytes_written_total", ())] == sum(f.size for f in files)
    assert values[("archiver_messages_dropped_total", (("reason", "slow_consumer"),))] == 0
    assert values[("archiver_nats_reconnects_total", ())] >= 1
    assert values[("archiver_upload_seconds_count", ())] == len(files)
    per_app = {
        labels[0][1]: v
        for (name, labels), v in values.items()
        if name == "archiver_app_messages_archived_total"
    }
    assert sum(per_app.values()) == len(messages) and len(per_app) == 3
    assert all("instance" not in dict(labels) for _, labels in values)  # bounded cardinality


def test_stall_watchdog_resubscribes_and_logs_once(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    proc = start_archiver(
        nats_server.url, local_settings, tmp_path, STALL_TIMEOUT="1s", FLUSH_INTERVAL="200ms"
    )
    messages = batch(22, 500)
    try:
        proc.wait_subscribed()
        wait_for(lambda: proc.metric("archiver_stall_recoveries_total") >= 2, 20, "watchdog twice", proc)
        assert proc.health()[0] == 200  # quietness alone never fails /health
        proc.wait_subscribed()
        asyncio.run(publish(nats_server.url, messages))
        wait_for(
            lambda: proc.metric("archiver_messages_archived_total") >= len(messages), 30, "archived", proc
        )
    finally:
        assert proc.stop() == 0, proc.log()
    assert proc.log().count("stall watchdog") == 1
    assert check_exactly(local_settings, messages) == (0, 0)


def test_two_workers_archive_each_message_once(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    proc = start_archiver(nats_server.url, local_settings, tmp_path, WORKERS="2", FLUSH_INTERVAL="200ms",
                          SPOOL_DIR=str(tmp_path / "spool"))  # fmt: skip
    messages = batch(23, 6000)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                status, report = proc.health()
                if status == 200 and all(w["nats"]["subscribed"] for w in report["workers"]):
                    break
            except (OSError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, proc.log()
            time.sleep(0.1)
        assert len(report["workers"]) == 2
        asyncio.run(publish(nats_server.url, messages))

        def received() -> float:
            _, body = proc.get("/metrics")
            return sum(v for (n, _), v in samples(body).items() if n == "archiver_messages_archived_total")

        wait_for(lambda: received() >= len(messages), 30, "archived by the workers", proc)
        _, body = proc.get("/metrics")
        per_worker = {dict(labels)["worker"]: v for (n, labels), v in samples(body).items()
                      if n == "archiver_messages_received_total"}  # fmt: skip
    finally:
        assert proc.stop() == 0, proc.log()
    assert set(per_worker) == {"0", "1"} and all(v > 0 for v in per_worker.values()), per_worker
    assert sum(archived_payloads(read_archive(local_settings)).values()) == len(messages)
    assert check_exactly(local_settings, messages) == (0, 0)
    assert sorted(p.name for p in (tmp_path / "spool").iterdir()) == ["worker-0", "worker-1"]
