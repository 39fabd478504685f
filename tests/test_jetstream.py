"""Issue 4, JetStream mode: kill -9 while consuming and downtime while publishing; archive == stream, exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import nats
import pytest
from harness import archived_payloads, normalise, read_archive, start_archiver, unique_messages, wait_for
from nats.js.api import AckPolicy, ConsumerConfig
from test_table_readers import read_deltalake

from archiver.codec.payloads import Payloads
from archiver.config import ArchiveSettings
from archiver.environment import load_run_config
from archiver.errors import ConfigError
from archiver.service.buffer import FlushBatch
from archiver.service.jetstream_acks import AckTracker

STREAM = "LOGS"
SUBJECT = "logs.>"


messages = unique_messages


async def _create(url: str, consumer: ConsumerConfig | None) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=STREAM, subjects=[SUBJECT])
        if consumer is not None:
            await js.add_consumer(STREAM, consumer)
    finally:
        await nc.close()


async def _consumer_state(url: str, durable: str) -> tuple[int, int, int]:
    """(num_pending, num_ack_pending, messages in the stream)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.consumer_info(STREAM, durable)
        stream = await js.stream_info(STREAM)
        return info.num_pending or 0, info.num_ack_pending or 0, stream.state.messages
    finally:
        await nc.close()


def consumer_state(url: str, durable: str = "archiver") -> tuple[int, int, int]:
    """The durable consumer's backlog, as the server sees it."""
    return asyncio.run(_consumer_state(url, durable))


class Publisher(threading.Thread):
    """Publishes to the stream in small chunks with pauses, so kills land while it goes on.

    It goes on until ``stop`` is set (or the messages run out), so that on a
    slow machine, where each archiver takes longer to start, publishing still
    spans every kill: ``msgs[:published]`` is what was sent.
    """

    def __init__(self, url: str, msgs: list[tuple[str, bytes]], chunk: int, pause_s: float) -> None:
        super().__init__(daemon=True)
        self.url, self.msgs, self.chunk, self.pause_s = url, msgs, chunk, pause_s
        self.published = 0
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        """Publish every message (each acked by JetStream)."""
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # re-raised by the test
            self.error = exc

    async def _publish(self) -> None:
        nc = await nats.connect(self.url)
        js = nc.jetstream()
        try:
            for i in range(0, len(self.msgs), self.chunk):
                if self.stop.is_set():
                    break
                acks = [js.publish(subject, payload) for subject, payload in self.msgs[i : i + self.chunk]]
                await asyncio.gather(*acks)
                self.published += len(acks)
                await asyncio.sleep(self.pause_s)
        finally:
            await nc.close()


def check_exactly(settings: ArchiveSettings, sent: list[tuple[str, bytes]]) -> tuple[int, int]:
    """(losses, duplicates) of the archive against ``sent``."""
    want = Counter(normalise(p) for _, p in sent)
    got = archived_payloads(read_archive(settings))
    return sum((want - got).values()), sum((got - want).values())


@pytest.mark.timeout(120)
def test_kill_9_and_downtime_while_publishing_archive_equals_stream(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    rng = random.Random(int(os.environ.get("KILL_SEED", "5")))
    # A short ack wait, so what a killed archiver had fetched but not spooled comes back within the test.
    asyncio.run(_create(nats_server.url, ConsumerConfig(
        name="archiver", durable_name="archiver", ack_policy=AckPolicy.EXPLICIT, filter_subject=SUBJECT,
        ack_wait=2.0, max_ack_pending=200_000)))  # fmt: skip
    ready = messages(1, 30_000)  # more than publishing during the kills takes; the rest is never sent
    publisher = Publisher(nats_server.url, ready, chunk=100, pause_s=0.1)
    env = {"JETSTREAM_STREAM": STREAM, "SPOOL_DIR": str(tmp_path / "spool"), "FLUSH_INTERVAL": "200ms",
           "FLUSH_BYTES": "64KiB", "SPOOL_FSYNC_INTERVAL": "50ms"}  # fmt: skip
    started = time.monotonic()
    publisher.start()
    kills = kills_while_publishing = 0
    for round_no in range(4):
        proc = start_archiver(nats_server.url, local_settings, tmp_path / f"r{round_no}", None, **env)
        try:
            proc.wait_subscribed()
            wait_for(lambda p=proc: p.metric("archiver_messages_received_total") > 0 or not publisher.is_alive(),
                     30, "consuming", proc)  # fmt: skip
            time.sleep(rng.uniform(0.1, 0.8))  # before, during or after uploads and acks
            kills_while_publishing += publisher.is_alive()
        finally:
            proc.kill()
        kills += 1
        time.sleep(rng.uniform(0.2, 1.0))  # down while publishing goes on
    final = start_archiver(nats_server.url, local_settings, tmp_path / "final", None, **env)
    try:
        final.wait_subscribed()
        time.sleep(0.5)  # publishing goes on into the last archiver's run too
        publisher.stop.set()
        publisher.join(60)
        assert publisher.error is None and not publisher.is_alive()
        sent = ready[: publisher.published]
        wait_for(lambda: consumer_state(nats_server.url)[:2] == (0, 0), 45, "consumer caught up", final)
        redeliveries = final.metric("archiver_jetstream_redeliveries_total")
        acks = final.metric("archiver_jetstream_acks_total")
    finally:
        assert final.stop() == 0, final.log()
    losses, duplicates = check_exactly(local_settings, sent)
    in_stream = consumer_state(nats_server.url)[2]
    print(f"\nkills={kills} while_publishing={kills_while_publishing} messages={len(sent)} stream={in_stream} "
          f"losses={losses} duplicates={duplicates} final_redeliveries={redeliveries:.0f} final_acks={acks:.0f} "
          f"seconds={time.monotonic() - started:.1f}")  # fmt: skip
    assert kills >= 3 and kills_while_publishing >= 3
    assert in_stream == len(sent)
    assert (losses, duplicates) == (0, 0)
    # TABLE on (the default) acks at upload, before the commit: the table still holds each row once.
    in_table = Counter(message for message, _ in read_deltalake(local_settings))
    assert in_table == Counter(json.loads(p)["message"] for _, p in sent)


@pytest.mark.timeout(60)
def test_creates_its_consumer_and_refuses_a_missing_stream(
    nats_server: Any, local_settings: ArchiveSettings, tmp_path: Path
) -> None:
    asyncio.run(_create(nats_server.url, None))
    missing = start_archiver(nats_server.url, local_settings, tmp_path / "missing", JETSTREAM_STREAM="NOPE")
    try:
        assert missing.proc.wait(30) == 1
    finally:
        missing.kill()
    assert "no stream 'NOPE'" in missing.log()
    sent = messages(2, 500)
    proc = start_archiver(nats_server.url, local_settings, tmp_path / "ok", JETSTREAM_STREAM=STREAM,
                          JETSTREAM_DURABLE="made-here", FLUSH_INTERVAL="200ms")  # fmt: skip
    try:
        proc.wait_subscribed()
        publisher = Publisher(nats_server.url, sent, chunk=250, pause_s=0)
        publisher.run()
        assert publisher.error is None
        wait_for(lambda: consumer_state(nats_server.url, "made-here")[:2] == (0, 0), 30, "all acked", proc)
        assert proc.metric("archiver_jetstream_acks_total") >= len(sent)

        async def config() -> Any:
            nc = await nats.connect(nats_server.url)
            try:
                return (await nc.jetstream().consumer_info(STREAM, "made-here")).config
            finally:
                await nc.close()

        created = asyncio.run(config())
    finally:
        assert proc.stop() == 0, proc.log()
    assert created.ack_policy == AckPolicy.EXPLICIT and created.filter_subject == SUBJECT
    assert (created.ack_wait or 0) >= 60 and created.max_ack_pending == 200_000
    assert check_exactly(local_settings, sent) == (0, 0)


def test_jetstream_mode_needs_the_spool() -> None:
    with pytest.raises(ConfigError, match="SPOOL_DIR"):
        load_run_config({}, {"JETSTREAM_STREAM": STREAM, "SPOOL_DIR": "off"})
    assert load_run_config({"jetstream_stream": STREAM}, {}).jetstream_stream == STREAM


def _batch(partition: tuple[str, str], first: int, end: int) -> FlushBatch:
    return FlushBatch("a", "r", partition[0], partition[1], Payloads(), 0, 0, first, end)


def test_tracker_acks_once_archived_and_recognises_redeliveries() -> None:
    tracker = AckTracker()
    a, b = ("app-a", "ams"), ("app-b", "ams")
    for spool_seq, (stream_seq, part) in enumerate([(10, a), (11, b), (12, a), (13, b)]):
        tracker.add(spool_seq, stream_seq, f"ack.{stream_seq}", part)
    assert tracker.redelivered(12, "ack.12.again")  # pending: remembered, not acked yet
    assert not tracker.redelivered(99, "ack.99")
    assert tracker.take_acks() == []
    tracker.archived(_batch(b, 1, 4))  # b's batch first: out of order across partitions
    assert tracker.take_acks() == ["ack.11", "ack.13"]
    tracker.archived(_batch(a, 0, 4))
    assert tracker.take_acks() == ["ack.10", "ack.12.again"]
    assert tracker.redelivered(10, "ack.10.late")  # archived: acked at once, never spooled again
    assert tracker.take_acks() == ["ack.10.late"]
    assert tracker.low_water_seq(100) == 0


def test_tracker_forgets_only_after_the_floor_has_settled() -> None:
    tracker = AckTracker()
    for seq in range(4):
        tracker.add(seq, 100 + seq, f"ack.{seq}", ("x", "y"), archived=seq < 3)
    tracker.observe_floor(103, now=10.0)
    tracker.settle(seen_before=9.0)  # a copy sent before the floor may still be on its way
    assert tracker.redelivered(101, "copy") and len(tracker) == 4
    tracker.settle(seen_before=10.0)
    assert len(tracker) == 1  # 103 is not archived yet: kept, whatever the floor says
    assert not tracker.redelivered(101, "later")
    assert tracker.low_water_seq(100) == 3
