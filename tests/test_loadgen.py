"""The Fly-shaped log generator, its sample corpus and the publisher (archiver.demo.loadgen, .corpus, .publish)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import re
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from archiver.demo import loadgen
from archiver.demo.corpus import sample_lines, sample_systems
from archiver.demo.flymessage import fly_message, fly_subject
from archiver.demo.loadgen import FlyLogGenerator
from archiver.demo.publish import main as publish_main
from archiver.demo.publish import publish
from archiver.demo.servers import NatsServer

TIMESTAMP = re.compile(r"\A\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z\Z")
SUBJECT = re.compile(r"\Alogs\.([a-z0-9-]+)\.([a-z]{3})\.([0-9a-f]{14})\Z")
LOGHUB = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "loghub"
S = 10**9
SYSTEMS = {"Android", "BGL", "HDFS", "HPC", "Hadoop", "Mac", "OpenStack", "Spark", "Thunderbird", "Windows"}


def parse_ts(text: str) -> int:
    """Nanoseconds since the epoch of a 9-digit RFC 3339 UTC timestamp."""
    whole, fraction = text[:-1].split(".")
    return int(datetime.fromisoformat(whole + "+00:00").timestamp()) * 10**9 + int(fraction)


def app_level(message: str) -> str | None:
    """The app's own level inside a JSON message, normalised; None for plain text."""
    if not message.startswith("{"):
        return None
    record = json.loads(message)
    raw = record.get("level", record.get("severity", record.get("lvl")))
    numbers = {20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal"}
    names = {"dbug": "debug", "warning": "warn", "eror": "error", "crit": "fatal", "critical": "fatal"}
    if isinstance(raw, int):
        return numbers[raw]
    return str(names.get(raw.lower(), raw.lower()))


def test_shipped_sample_has_ten_systems_and_its_licence() -> None:
    systems = sample_systems()
    assert set(systems) == SYSTEMS
    assert all(250 <= len(lines) <= 300 for lines in systems.values())
    assert all("\r" not in line and "\n" not in line for line in sample_lines())
    sample = Path(loadgen.__file__).with_name("sample")
    assert sum(p.stat().st_size for p in sample.iterdir()) < 400_000
    assert "loghub" in (sample / "LICENSE").read_text().lower()
    assert "ISSRE" in (sample / "README.md").read_text()


@pytest.mark.skipif(not LOGHUB.is_dir(), reason="the shared LogHub corpus is absent")
def test_sample_lines_are_the_corpus_lines_unchanged() -> None:
    shipped = sample_systems()
    full = sample_systems(LOGHUB)
    assert set(full) == SYSTEMS
    for system, lines in shipped.items():
        assert lines == full[system][: len(lines)]


def test_sample_from_a_directory(tmp_path: Path) -> None:
    (tmp_path / "Foo_2k.log").write_bytes(b"one\r\ntwo\r\n\r\n")
    (tmp_path / "notes.txt").write_text("ignored")
    assert sample_systems(tmp_path) == {"Foo": ["one", "two"]}
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        sample_systems(tmp_path / "empty")


def test_same_seed_same_messages_other_seed_other_messages() -> None:
    start = 1_700_000_000 * 10**9
    a = FlyLogGenerator(seed=7, start_ns=start, span_ns=3600 * 10**9).messages(2000)
    b = FlyLogGenerator(seed=7, start_ns=start, span_ns=3600 * 10**9).messages(2000)
    c = FlyLogGenerator(seed=8, start_ns=start, span_ns=3600 * 10**9).messages(2000)
    assert a == b
    assert a != c
    # Batching does not change the stream.
    d = FlyLogGenerator(seed=7, start_ns=start, span_ns=3600 * 10**9)
    assert d.messages(500) + d.messages(1500) == a


def test_subjects_and_payloads_are_fly_shaped() -> None:
    generator = FlyLogGenerator(seed=1, apps=5, regions=3, instances=2)
    assert len(generator.instances) == 5 * 3 * 2
    assert len({i.instance for i in generator.instances}) == 30
    before = time.time_ns()
    messages = generator.messages(5000)
    after = time.time_ns()
    subjects = Counter(subject for subject, _ in messages)
    assert set(subjects) <= {i.subject for i in generator.instances}
    assert len({s.split(".")[1] for s in subjects}) == 5
    for subject, payload in messages:
        match = SUBJECT.match(subject)
        assert match, subject
        record = json.loads(payload)
        assert list(record) == ["event", "fly", "host", "log", "message", "timestamp"]
        app, region, instance = match.groups()
        assert record["fly"] == {"app": {"instance": instance, "name": app}, "region": region}
        assert record["event"]["provider"] in ("app", "runner")
        assert record["log"] == {"level": "info"}
        assert re.fullmatch(r"[0-9a-f]{4}", record["host"])
        assert isinstance(record["message"], str) and record["message"]
        assert TIMESTAMP.match(record["timestamp"]), record["timestamp"]
        assert before <= parse_ts(record["timestamp"]) <= after


def test_generated_messages_are_fly_messages() -> None:
    # The generator pastes pre-escaped text into fly_message's envelope: the bytes must be the same.
    mixed = FlyLogGenerator(
        seed=9, apps=3, json_fraction=0.5, runner_fraction=0.2, start_ns=1_700_000_000 * S
    )
    odd_text = FlyLogGenerator(apps=["a1"], regions=["ams"], systems={"X": ['é "q" \\ \t\u2028']})
    for subject, payload in [*mixed.messages(2000), *odd_text.messages(20)]:
        record = json.loads(payload)
        app, region, instance = subject.split(".")[1:]
        assert subject == fly_subject(app, region, instance)
        rebuilt = fly_message(app, region, record["message"], record["timestamp"], instance=instance,
                              host=record["host"], provider=record["event"]["provider"])  # fmt: skip
        assert rebuilt == payload


def test_level_mix_and_message_kinds() -> None:
    generator = FlyLogGenerator(seed=3, apps=10, json_fraction=0.4, runner_fraction=0.02)
    records = [json.loads(payload) for _, payload in generator.messages(20_000)]
    providers = Counter(r["event"]["provider"] for r in records)
    assert 0.01 < providers["runner"] / len(records) < 0.03
    app_messages = [r["message"] for r in records if r["event"]["provider"] == "app"]
    levels = Counter(app_level(m) for m in app_messages)
    assert 0.35 < 1 - levels[None] / len(app_messages) < 0.45  # the JSON share
    assert {"debug", "info", "warn", "error", "fatal"} <= set(levels)
    styles: Counter[str] = Counter()
    for message in app_messages:
        if message.startswith("{"):
            record = json.loads(message)
            styles["pino" if isinstance(record.get("level"), int) else next(iter(record))] += 1
    assert set(styles) == {
        "level",
        "severity",
        "t",
        "pino",
        "event",
    }  # zap, Cloud Logging, log15, pino, structlog
    # A plain line is sample text unchanged; JSON lines wrap sample text.
    lines = set(sample_lines())
    assert all(m in lines for m in app_messages if not m.startswith("{"))


def test_json_messages_carry_the_event_time() -> None:
    generator = FlyLogGenerator(
        seed=5, json_fraction=1.0, runner_fraction=0.0, start_ns=1_700_000_000_123_456_789
    )
    for _, payload in generator.messages(500):
        record = json.loads(payload)
        inner = json.loads(record["message"])
        assert record["timestamp"] == "2023-11-14T22:13:20.123456789Z"
        if "time" in inner:
            assert inner["time"] == 1_700_000_000_123
        if "ts" in inner:
            assert inner["ts"] == pytest.approx(1_700_000_000.123456)
        for key in ("t", "timestamp"):
            if key in inner:
                assert inner[key] == record["timestamp"]


def test_event_times_spread_over_the_window() -> None:
    span = 3 * 86400 * 10**9
    start = time.time_ns() - span
    generator = FlyLogGenerator(seed=2, start_ns=start, span_ns=span)
    times = [parse_ts(json.loads(payload)["timestamp"]) for _, payload in generator.messages(10_000)]
    assert all(start <= t < start + span for t in times)
    assert min(times) - start < span * 0.01 and start + span - max(times) < span * 0.01
    hours = Counter((t - start) // (3600 * 10**9) for t in times)
    assert len(hours) == 72  # every hour of the three days has events


def test_skew_and_uniform_traffic() -> None:
    skewed = Counter(s.split(".")[1] for s, _ in FlyLogGenerator(seed=1, apps=4).messages(20_000))
    assert skewed.most_common(1)[0][0] == "sandwich"
    assert skewed["sandwich"] > 3 * skewed[min(skewed, key=skewed.__getitem__)]
    uniform = Counter(s.split(".")[1] for s, _ in FlyLogGenerator(seed=1, apps=4, skew=0).messages(20_000))
    assert max(uniform.values()) < 1.2 * min(uniform.values())


def test_every_instance_appears_even_with_many_apps() -> None:
    generator = FlyLogGenerator(seed=1, apps=60, regions=5, instances=3, skew=2.0)
    assert len(generator._pick) >= 64 * len(generator.instances)
    assert set(generator._pick) == set(range(len(generator.instances)))
    assert len({i.app for i in generator.instances}) == 60


def test_explicit_names_and_bad_arguments() -> None:
    generator = FlyLogGenerator(
        apps=["a1", "b2"], regions=["ams"], instances=1, runner_fraction=0, systems={"X": ['hello "x" \\']}
    )
    messages = generator.messages(50)
    assert {s.rsplit(".", 1)[0] for s, _ in messages} == {"logs.a1.ams", "logs.b2.ams"}
    for _, payload in messages:
        message = json.loads(payload)["message"]
        if message.startswith("{"):
            record = json.loads(message)
            message = record.get("msg") or record.get("message") or record["event"]
        assert message == 'hello "x" \\'
    with pytest.raises(ValueError):
        FlyLogGenerator(span_ns=10)
    with pytest.raises(ValueError):
        FlyLogGenerator(json_fraction=1.5)
    with pytest.raises(ValueError):
        FlyLogGenerator(apps=0)
    with pytest.raises(ValueError, match="names"):
        FlyLogGenerator(apps=["my.app"])  # a dot would split the subject token
    with pytest.raises(ValueError, match="names"):
        FlyLogGenerator(regions=['a"b'])


def stream_digest(generator: FlyLogGenerator, count: int) -> str:
    """SHA-256 of the next ``count`` messages, subject and payload of each."""
    digest = hashlib.sha256()
    for subject, payload in generator.messages(count):
        digest.update(b"%s\0%s\n" % (subject.encode(), payload))
    return digest.hexdigest()


def test_the_stream_of_a_seed_never_changes() -> None:
    # Benchmarks and archived test data compare runs across versions: a refactoring must not change a byte.
    spread = FlyLogGenerator(seed=12, start_ns=1_795_500_000_123_456_789, span_ns=3 * 86400 * 10**9)
    spread_sha256 = "e85b2d9e5f26be9c0f4486760d4cb066b636759b61038086381a5a08cdbfb24a"
    assert stream_digest(spread, 150_000) == spread_sha256
    clock = itertools.count(1_700_000_000 * 10**9, 999_999).__next__
    live = FlyLogGenerator(seed=3, apps=12, regions=["ams", "ord"], instances=1, json_fraction=0.6,
                           runner_fraction=0.05, skew=0, clock=clock)  # fmt: skip
    live_sha256 = "96824abb6f39c3fc78e5f5dac99e5178f739aa07b20b2b43cd6b67e6141da757"
    assert stream_digest(live, 20_000) == live_sha256


def test_generation_is_fast() -> None:
    generator = FlyLogGenerator(seed=1)
    generator.messages(1000)  # warm the date cache
    began = time.perf_counter()
    generator.messages(50_000)
    rate = 50_000 / (time.perf_counter() - began)
    assert rate > 100_000, f"{rate:.0f} msg/s"  # measured ~600k/s; loose for slow CI machines


@pytest.fixture
def nats_url(nats_server: NatsServer) -> str:
    return nats_server.url


async def collect(url: str, received: list[tuple[str, bytes]]):  # type: ignore[no-untyped-def]
    import nats

    nc = await nats.connect(url)

    async def on_message(msg) -> None:  # type: ignore[no-untyped-def]
        received.append((msg.subject, msg.data))

    await nc.subscribe("logs.>", cb=on_message)
    await nc.flush()
    return nc


async def test_publish_paced_sends_exactly_rate_times_duration(nats_url: str) -> None:
    received: list[tuple[str, bytes]] = []
    nc = await collect(nats_url, received)
    generator = FlyLogGenerator(seed=4)
    began = time.monotonic()
    sent = await publish(nats_url, generator, rate_per_s=2000, duration_s=0.5)
    elapsed = time.monotonic() - began
    await nc.flush()
    await asyncio.sleep(0.1)
    await nc.close()
    assert sent == 1000
    assert 0.4 < elapsed < 2.0
    assert len(received) == 1000
    assert all(SUBJECT.match(s) for s, _ in received)


async def test_publish_a_list_as_fast_as_possible_and_stop(nats_url: str) -> None:
    received: list[tuple[str, bytes]] = []
    nc = await collect(nats_url, received)
    messages = FlyLogGenerator(seed=5).messages(3000)
    assert await publish(nats_url, messages) == 3000
    assert await publish(nats_url, messages, count=10) == 10
    stop = asyncio.Event()
    stop.set()
    assert await publish(nats_url, FlyLogGenerator(seed=6), stop=stop) == 0
    await nc.flush()
    for _ in range(50):
        if len(received) >= 3010:
            break
        await asyncio.sleep(0.05)
    await nc.close()
    assert received[:3000] == messages
    assert len(received) == 3010


def test_cli_dry_run_reports_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert publish_main(["--dry-run", "--count", "20000", "--spread", "2d", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sent"] == 20000 and result["rate_per_s"] > 0 and 200 < result["avg_bytes"] < 1000


def test_cli_publishes(nats_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert publish_main(["--url", nats_url, "--rate", "1000", "--duration", "0.3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sent"] == 300
