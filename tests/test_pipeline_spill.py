"""Memory full → spill to the spool → replay, in process: the stages alone, then the whole Service on a real nats-server.

While uploads cannot keep up, the buffers reach ``MAX_BUFFER_BYTES``; new
records then go to the spool only, and the replay feeds them back as the
uploader frees memory (:class:`archiver.service.buffer.Room`). Nothing may be
lost or doubled on the way.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from harness import unique_messages
from stages import archived_messages, build, expected, message, wait_until

from archiver.archive.escaping import partition_value
from archiver.demo.publish import publish
from archiver.environment import load_run_config
from archiver.service.pipeline import Service
from archiver.storage.local import LocalStorage
from archiver.storage.open import open_storage

MESSAGES = unique_messages(13, 3000)


class GatedStorage(LocalStorage):
    """A local archive whose puts wait until the gate opens: storage slower than the stream."""

    def __init__(self, root: Path) -> None:
        super().__init__(str(root))
        self.gate = asyncio.Event()

    async def put(self, key: str, data: bytes) -> None:
        """Store once the gate is open."""
        await self.gate.wait()
        await super().put(key, data)


async def test_memory_full_spills_to_the_spool_and_replays_in_order(tmp_path: Path) -> None:
    spool_dir, archive = tmp_path / "spool", tmp_path / "archive"
    storage = GatedStorage(archive)
    # A cap a few encoded files fill: with storage stalled, memory stays full until the gate opens.
    cap = 16 * 1024
    stages = build(spool_dir, archive, storage=storage, flush_bytes=8 * 1024, max_buffer_bytes=cap)
    stages.spool.open()
    stages.uploader.start()
    replay = asyncio.create_task(stages.ingest.replay())
    ingest, buffers = stages.ingest, stages.buffers
    try:
        most_held = 0
        for i, (subject, payload) in enumerate(MESSAGES):
            await ingest.on_message(message(subject, payload))
            most_held = max(most_held, buffers.buffered_bytes)
            if i % 20 == 19:
                await asyncio.sleep(0)  # a loop turn: the group commit, the replay, the encodes
        ingest.commit()
        # Spilling: every message is received and spooled; most wait in the spool only.
        assert ingest.spilling and not buffers.has_room()
        assert stages.stats.messages_received == len(MESSAGES) and stages.spool.written_seq == len(MESSAGES)
        assert ingest.replay_seq < len(MESSAGES) // 2 and ingest.low_water_seq() <= ingest.replay_seq
        # The cap holds, but for the encode's reserve on the batch detached at the cap (buffer.py).
        assert most_held <= 2.5 * cap + 1024

        storage.gate.set()  # storage catches up: memory frees, the replay feeds the rest
        await asyncio.wait_for(ingest.wait_caught_up(), 60)
        assert not ingest.spilling and ingest.replay_seq == len(MESSAGES)
        for batch in buffers.detach_all():
            stages.submit(batch)
        await asyncio.wait_for(stages.uploader.join(), 60)

        assert await archived_messages(archive) == expected(MESSAGES)  # each once
        assert stages.stats.messages_archived == len(MESSAGES) and buffers.buffered_bytes == 0
        # Per partition, its batches hold its messages in arrival order, spilled or not.
        arrived: dict[tuple[str, str], list[bytes]] = {}
        for subject, payload in MESSAGES:
            _, app, region, _ = subject.split(".")
            arrived.setdefault((partition_value(app), partition_value(region)), []).append(payload)
        handed: dict[tuple[str, str], list[bytes]] = {}
        for partition, _, payloads in sorted(stages.handed_on, key=lambda h: h[1]):
            handed.setdefault(partition, []).extend(payloads)
        assert handed == arrived
    finally:
        replay.cancel()
        await asyncio.gather(replay, return_exceptions=True)
        await stages.close()


async def test_service_spills_while_storage_fails_and_archives_everything_once(
    nats_server: Any, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    # A file where each app's directory goes: every upload fails until they are removed.
    apps = {partition_value(subject.split(".")[1]) for subject, _ in MESSAGES}
    blockers = [archive / f"app={app}" for app in apps]
    for blocker in blockers:
        blocker.write_bytes(b"")
    config = load_run_config(
        {"nats_url": nats_server.url, "archive_url": str(archive), "spool_dir": str(tmp_path / "spool"),
         "flush_interval": "200ms", "flush_bytes": "32KiB", "max_buffer_bytes": "128KiB",
         "http_host": "127.0.0.1", "http_port": "0", "log_level": "warning"},
        {},
    )  # fmt: skip
    service = Service(config, open_storage(config.archive))
    stop, abandon = asyncio.Event(), asyncio.Event()
    run = asyncio.create_task(service.run(stop, abandon))
    try:
        await wait_until(lambda: service.source.subscribed or run.done(), 30, "subscribed")
        assert not run.done()
        client = service.source.client
        assert client is not None
        await client.flush(timeout=5)  # the SUB reaches the server before the first publish
        await publish(nats_server.url, MESSAGES)
        await wait_until(lambda: service.stats.messages_received == len(MESSAGES), 30, "all received")
        await wait_until(lambda: service.stats.upload_errors > 0, 30, "failed uploads")
        assert service.ingest.spilling and service.stats.messages_archived == 0
        _, report = service.health.report()
        assert report["spool"]["spilling"] and report["spool"]["bytes"] > 0

        for blocker in blockers:
            blocker.unlink()  # storage is back
        await wait_until(lambda: service.stats.messages_archived == len(MESSAGES), 60, "all archived")
        assert not service.ingest.spilling
    finally:
        for blocker in blockers:
            if blocker.is_file():  # the test failed before storage came back: let the service flush
                blocker.unlink()
        stop.set()
        await asyncio.wait_for(run, 60)
    assert service.stats.dropped == {"slow_consumer": 0, "spool_full": 0, "encode_error": 0}
    assert await archived_messages(archive) == expected(MESSAGES)
