"""Fly-shaped log generator and NATS publisher for ``archiver demo``, tests and benchmarks.

Messages look like the Fly log stream (see the project's notes): subject
``logs.<app>.<region>.<instance>``, a JSON envelope whose fields are all
strings, ``log.level`` nearly always ``info``, and a ``message`` that is either
a plain text line (real LogHub text shipped in ``archiver/sample``) or the app's
own JSON log line carrying its real level under ``level``/``severity``/``lvl``
(strings or pino numbers).

Generation is pure and deterministic for a seed, except that timestamps read
the clock when no ``start_ns`` is given. Run ``python -m archiver.loadgen
--help`` for the benchmark publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import importlib.resources
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import zstandard

from archiver.units import DURATION_HELP, parse_duration_s

#: Default app names; more apps than names get a numeric suffix.
APP_NAMES = (
    "sandwich",
    "billing-api",
    "web-frontend",
    "queue-worker",
    "auth-service",
    "image-resizer",
    "search-indexer",
    "chat-gateway",
    "metrics-proxy",
    "dc-team-52-simon",
)
#: Fly region codes that apps are spread over.
REGIONS = (
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
    "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
    "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
)  # fmt: skip

# What the platform's runner says about a machine (provider "runner").
_RUNNER_MESSAGES = (
    "Pulling container image registry.fly.io/{app}:deployment-01HZX3K4QF7T2M8V9W0YBCDE5G",
    "Successfully prepared image registry.fly.io/{app}:deployment-01HZX3K4QF7T2M8V9W0YBCDE5G (1.84s)",
    "Configuring firecracker",
    "Starting machine",
    "Preparing to run: `/app/start.sh` as root",
    "machine did not have a restart policy, defaulting to restart",
    "Sending signal SIGINT to main child process w/ PID 313",
    "Main child exited normally with code: 0",
    "Reaped child process with pid: 314, exit code: 0",
    "machine exited with exit code 0, not restarting",
)

# Application log levels as the JSON logging libraries spell them: name, weight,
# then the spellings of zap (level), Cloud Logging (severity), log15 (lvl), pino (level number)
# and structlog (level).
_LEVELS = (
    ("debug", 0.10, "debug", "DEBUG", "dbug", 20, "debug"),
    ("info", 0.62, "info", "INFO", "info", 30, "info"),
    ("warn", 0.15, "warn", "WARNING", "warn", 40, "warning"),
    ("error", 0.11, "error", "ERROR", "eror", 50, "error"),
    ("fatal", 0.02, "fatal", "CRITICAL", "crit", 60, "critical"),
)
_LEVEL_CUMULATIVE = tuple(sum(level[1] for level in _LEVELS[: i + 1]) for i in range(len(_LEVELS)))
# A line that names its own level keeps it when wrapped in JSON, so text and level agree.
_LEVEL_WORD = re.compile(r"\b(debug|info|warn|warning|error|fatal|critical)\b", re.IGNORECASE)
_ANDROID_LEVEL = re.compile(r"^\d\d-\d\d [\d:.]+\s+\d+\s+\d+ ([VDIWEF]) ")
_LEVEL_OF_WORD = {"debug": 0, "info": 1, "warn": 2, "warning": 2, "error": 3, "fatal": 4, "critical": 4}
_LEVEL_OF_LETTER = {"V": 0, "D": 0, "I": 1, "W": 2, "E": 3, "F": 4}

# Where the event time goes inside an app's JSON line.
_TIME_NONE, _TIME_SECONDS, _TIME_MILLIS, _TIME_RFC3339 = range(4)
_PLACEHOLDER = "@@T@@"
_JSON_POOL_BITS = 10  # 1024 pre-built JSON lines per app: variety without per-message json.dumps
_NS = 1_000_000_000
_TOKEN = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True, slots=True)
class Instance:
    """One machine of an app: where its messages come from."""

    app: str
    region: str
    instance: str  # 14 hex digits
    host: str  # short hex id of the physical host
    system: str  # which sample log its text comes from

    @property
    def subject(self) -> str:
        """The NATS subject its messages are published on."""
        return f"logs.{self.app}.{self.region}.{self.instance}"


def _read_log(name: str, data: bytes) -> list[str]:
    if name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    return [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]


def _system_name(file_name: str) -> str:
    # "HDFS_2k.log", "HDFS_300.log.zst" and "HDFS.log" all name the system "HDFS".
    return file_name.split(".", 1)[0].split("_", 1)[0]


def sample_systems(directory: str | os.PathLike[str] | None = None) -> dict[str, list[str]]:
    """Sample lines by system, from a directory's ``*.log``/``*.log.zst`` or else the shipped sample."""
    systems: dict[str, list[str]] = {}
    if directory is not None:
        files = [(p.name, p.read_bytes) for p in sorted(Path(directory).iterdir())]
    else:
        sample = importlib.resources.files("archiver") / "sample"
        files = [(p.name, p.read_bytes) for p in sorted(sample.iterdir(), key=lambda p: p.name)]
    for name, read in files:
        if name.endswith((".log", ".log.zst")):
            lines = _read_log(name, read())
            if lines:
                systems.setdefault(_system_name(name), []).extend(lines)
    if not systems:
        raise FileNotFoundError(f"no *.log or *.log.zst files with text in {directory or 'archiver/sample'}")
    return systems


def sample_lines(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """All sample log lines (system by system, in name order), from a directory or the shipped sample."""
    return [line for lines in sample_systems(directory).values() for line in lines]


def _escaped(text: str) -> str:
    # A JSON string literal with its quotes, ready to paste into the envelope.
    return json.dumps(text, ensure_ascii=False)


def _date_prefix(day: int) -> str:
    return datetime.fromtimestamp(day * 86400, UTC).strftime("%Y-%m-%dT")


class FlyLogGenerator:
    """Deterministic Fly log stream: apps × regions × instances sending sample text and JSON lines."""

    def __init__(
        self,
        *,
        seed: int = 0,
        apps: int | Sequence[str] = 4,
        regions: int | Sequence[str] = 3,
        instances: int = 2,
        systems: Mapping[str, Sequence[str]] | None = None,
        json_fraction: float = 0.35,
        runner_fraction: float = 0.01,
        skew: float = 1.0,
        start_ns: int | None = None,
        span_ns: int = 0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """Apps (count or names) each in ``regions`` regions with ``instances`` machines per region.

        ``systems`` maps a system name to its lines (default: the shipped sample); app *i* talks
        like system *i*. ``json_fraction`` of app messages are JSON with their own level,
        ``runner_fraction`` of all messages come from the runner. ``skew`` weights app *i* by
        1/(i+1)**skew (0: uniform). Event times are uniform in [start_ns, start_ns + span_ns) when
        ``start_ns`` is given, otherwise ``clock()`` at generation.
        """
        if not 0 <= json_fraction <= 1 or not 0 <= runner_fraction <= 1:
            raise ValueError("json_fraction and runner_fraction must be within [0, 1]")
        if span_ns < 0 or (start_ns is None and span_ns):
            raise ValueError("span_ns needs a start_ns and must not be negative")
        rng = random.Random(seed)
        self._rng = random.Random(rng.getrandbits(64))  # the per-message stream
        self._json_fraction = json_fraction
        self._runner_fraction = runner_fraction
        self._start_ns = start_ns
        self._span_ns = span_ns
        self._clock = clock
        self._dates: dict[int, str] = {}

        corpus = dict(systems) if systems is not None else sample_systems()
        system_names = sorted(name for name, lines in corpus.items() if lines)
        if not system_names:
            raise ValueError("systems holds no lines")
        app_names = list(apps) if not isinstance(apps, int) else _app_names(apps)
        if not app_names or instances < 1:
            raise ValueError("need at least one app and one instance per region")
        names = app_names + ([] if isinstance(regions, int) else list(regions))
        bad = [name for name in names if not _TOKEN.fullmatch(name)]
        if bad:
            # Names become subject tokens and JSON text verbatim: keep them to Fly's own alphabet.
            raise ValueError(f"app and region names must match {_TOKEN.pattern}, got {bad[:3]}")

        self.instances: list[Instance] = []
        weights: list[float] = []
        for index, app in enumerate(app_names):
            app_regions = (
                list(regions)
                if not isinstance(regions, int)
                else rng.sample(REGIONS, min(regions, len(REGIONS)))
            )
            if not app_regions:
                raise ValueError("need at least one region")
            system = system_names[index % len(system_names)]
            per_instance = (1.0 / (index + 1) ** skew) / (len(app_regions) * instances)
            for region in app_regions:
                for _ in range(instances):
                    self.instances.append(
                        Instance(
                            app, region, f"{rng.getrandbits(56):014x}", f"{rng.getrandbits(16):04x}", system
                        )
                    )
                    weights.append(per_instance)
        self._pick_bits, self._pick = _weighted_table(weights)

        # Everything below is pre-built so that one message costs a few random draws and one format.
        plain = {name: [_escaped(line) for line in corpus[name]] for name in system_names}
        json_pools = {name: _json_pool(rng, corpus[name], name) for name in system_names}
        self._sources: list[tuple[str, str, str, list[str], list[tuple[int, str, str]], list[str]]] = []
        for inst in self.instances:
            runner = [_escaped(text.format(app=inst.app)) for text in _RUNNER_MESSAGES]
            self._sources.append(
                (
                    inst.subject,
                    _envelope_head(inst, "app"),
                    _envelope_head(inst, "runner"),
                    plain[inst.system],
                    json_pools[inst.system],
                    runner,
                )
            )

    def _timestamp(self, ns: int) -> str:
        """RFC 3339 UTC with 9 fractional digits, as Fly writes it."""
        seconds, fraction = divmod(ns, _NS)
        day, second_of_day = divmod(seconds, 86400)
        date = self._dates.get(day)
        if date is None:
            date = self._dates[day] = _date_prefix(day)
        hours, rest = divmod(second_of_day, 3600)
        minutes, secs = divmod(rest, 60)
        return f"{date}{hours:02d}:{minutes:02d}:{secs:02d}.{fraction:09d}Z"

    def messages(self, n: int) -> list[tuple[str, bytes]]:
        """The next ``n`` messages as (subject, payload) pairs."""
        rng = self._rng
        random_ = rng.random
        getrandbits = rng.getrandbits
        pick, pick_bits = self._pick, self._pick_bits
        sources = self._sources
        json_fraction, runner_fraction = self._json_fraction, self._runner_fraction
        start_ns, span_ns, clock = self._start_ns, self._span_ns, self._clock
        timestamp = self._timestamp
        out: list[tuple[str, bytes]] = []
        append = out.append
        for _ in range(n):
            index = pick[getrandbits(pick_bits)]
            subject, app_head, runner_head, plain, pool, runner = sources[index]
            if start_ns is None:
                ns = clock()
            elif span_ns:
                ns = start_ns + getrandbits(64) % span_ns
            else:
                ns = start_ns
            ts = timestamp(ns)
            draw = random_()
            if draw < runner_fraction:
                head, message = runner_head, runner[int(random_() * len(runner))]
            else:
                head = app_head
                if random_() < json_fraction:
                    kind, before, after = pool[getrandbits(_JSON_POOL_BITS)]
                    if kind == _TIME_NONE:
                        message = before
                    elif kind == _TIME_MILLIS:
                        message = f"{before}{ns // 1_000_000}{after}"
                    elif kind == _TIME_SECONDS:
                        message = f"{before}{ns // _NS}.{ns % _NS // 1000:06d}{after}"
                    else:
                        message = f"{before}{ts}{after}"
                else:
                    message = plain[int(random_() * len(plain))]
            append((subject, f'{head}{message},"timestamp":"{ts}"}}'.encode()))
        return out

    def batches(self, size: int) -> Iterator[list[tuple[str, bytes]]]:
        """Endless batches of ``size`` messages."""
        while True:
            yield self.messages(size)


def _envelope_head(inst: Instance, provider: str) -> str:
    """The envelope up to ``"message":``, fields in the order Fly sends them (alphabetical)."""
    return (
        f'{{"event":{{"provider":"{provider}"}},"fly":{{"app":{{"instance":"{inst.instance}",'
        f'"name":"{inst.app}"}},"region":"{inst.region}"}},"host":"{inst.host}",'
        f'"log":{{"level":"info"}},"message":'
    )


def _app_names(count: int) -> list[str]:
    if count < 1:
        raise ValueError("need at least one app")
    return [
        APP_NAMES[i % len(APP_NAMES)] + (f"-{i // len(APP_NAMES)}" if i >= len(APP_NAMES) else "")
        for i in range(count)
    ]


def _weighted_table(weights: Sequence[float]) -> tuple[int, list[int]]:
    """A power-of-two lookup table so one ``getrandbits`` picks an index by weight."""
    bits = max(12, (64 * len(weights) - 1).bit_length())
    size = 1 << bits
    total = sum(weights)
    cumulative: list[float] = []
    running = 0.0
    for weight in weights:
        running += weight / total
        cumulative.append(running)
    last = len(weights) - 1
    table = [min(bisect.bisect_right(cumulative, (k + 0.5) / size), last) for k in range(size)]
    # A very light instance could round to no slot at all; give each at least one so every subject appears.
    missing = set(range(len(weights))) - set(table)
    for slot, index in enumerate(sorted(missing)):
        table[slot * 7 % size] = index
    return bits, table


def _level_of(text: str, draw: float) -> int:
    """Index into _LEVELS: the level the line names, else one drawn by weight."""
    letter = _ANDROID_LEVEL.match(text)
    if letter:
        return _LEVEL_OF_LETTER[letter[1]]
    word = _LEVEL_WORD.search(text)
    if word:
        return _LEVEL_OF_WORD[word[1].lower()]
    return min(bisect.bisect_right(_LEVEL_CUMULATIVE, draw), len(_LEVELS) - 1)


def _json_pool(rng: random.Random, lines: Sequence[str], system: str) -> list[tuple[int, str, str]]:
    """Pre-built app JSON lines, escaped for the envelope, split where the event time goes."""
    pool: list[tuple[int, str, str]] = []
    component = system.lower()
    for _ in range(1 << _JSON_POOL_BITS):
        text = lines[rng.randrange(len(lines))]
        draw = rng.random()
        level = _LEVELS[_level_of(text, draw)]
        style = rng.randrange(5)
        record: dict[str, Any]
        if style == 0:  # zap
            kind = _TIME_SECONDS
            caller = f"{component}/handler.go:{rng.randrange(20, 400)}"
            record = {"level": level[2], "ts": _PLACEHOLDER, "caller": caller, "msg": text}
        elif style == 1:  # Google Cloud Logging structured
            kind = _TIME_NONE
            record = {"severity": level[3], "message": text, "component": component}
        elif style == 2:  # log15
            kind = _TIME_RFC3339
            record = {"t": _PLACEHOLDER, "lvl": level[4], "msg": text}
        elif style == 3:  # pino
            kind = _TIME_MILLIS
            record = {"level": level[5], "time": _PLACEHOLDER, "pid": rng.randrange(300, 700)}
            record.update(hostname=component, msg=text)
        else:  # structlog
            kind = _TIME_RFC3339
            record = {
                "event": text,
                "level": level[6],
                "logger": f"{component}.worker",
                "timestamp": _PLACEHOLDER,
            }
        literal = _escaped(json.dumps(record, ensure_ascii=False, separators=(",", ":")))
        if kind == _TIME_NONE:
            pool.append((kind, literal, ""))
            continue
        # Numbers lose the placeholder's quotes; strings keep them (escaped inside the literal).
        marker = f'\\"{_PLACEHOLDER}\\"' if kind in (_TIME_SECONDS, _TIME_MILLIS) else _PLACEHOLDER
        before, after = literal.split(marker)
        pool.append((kind, before, after))
    return pool


async def publish(
    url: str,
    source: FlyLogGenerator | Iterable[tuple[str, bytes]],
    rate_per_s: float | None = None,
    duration_s: float | None = None,
    *,
    count: int | None = None,
    user: str | None = None,
    password: str | None = None,
    stop: asyncio.Event | None = None,
    batch_size: int | None = None,
) -> int:
    """Publish at ``rate_per_s`` (None: flat out) until count, duration or stop; return how many were sent."""
    import nats  # deferred: pure generation should not need a NATS client

    if rate_per_s is not None and rate_per_s <= 0:
        raise ValueError("rate_per_s must be positive (None for as fast as possible)")
    # Paced for a duration: send exactly rate x duration (fewer only if the loop cannot keep up),
    # so a benchmark knows how many messages to expect downstream.
    if count is None and rate_per_s is not None and duration_s is not None:
        count = round(rate_per_s * duration_s)
    if batch_size is None:
        # About 100 batches a second when paced: smooth enough, and cheap on the event loop.
        batch_size = 1000 if rate_per_s is None else max(1, min(1000, int(rate_per_s / 100)))
    if isinstance(source, FlyLogGenerator):
        batches: Iterator[list[tuple[str, bytes]]] = source.batches(batch_size)
    else:
        iterator = iter(source)
        batches = iter(lambda: list(islice(iterator, batch_size)), [])

    nc = await nats.connect(
        url, name="archiver-loadgen", user=user, password=password, max_reconnect_attempts=-1
    )
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        start = loop.time()
        deadline = None if duration_s is None else start + duration_s
        while count is None or sent < count:
            if (stop is not None and stop.is_set()) or (deadline is not None and loop.time() >= deadline):
                break
            batch = next(batches, None)
            if not batch:
                break
            if count is not None and sent + len(batch) > count:
                batch = batch[: count - sent]
            for subject, payload in batch:
                await nc.publish(subject, payload)
            sent += len(batch)
            if rate_per_s is None:
                await asyncio.sleep(0)  # let the client's flusher write between batches
                continue
            delay = start + sent / rate_per_s - loop.time()
            if deadline is not None:
                delay = min(delay, deadline - loop.time())
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), delay)
            else:
                await asyncio.sleep(0)
        await nc.flush(timeout=30)
    finally:
        await nc.close()
    return sent


def _duration_arg(text: str) -> float:
    try:
        return parse_duration_s(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {DURATION_HELP}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line publisher for benchmarks: ``python -m archiver.loadgen --rate 10000 --duration 10``."""
    parser = argparse.ArgumentParser(prog="python -m archiver.loadgen", description=main.__doc__)
    parser.add_argument("--url", default="nats://127.0.0.1:4222", help="NATS server (default: %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=None, help="messages per second (default: as fast as possible)"
    )
    parser.add_argument("--duration", type=_duration_arg, default=None, help="stop after this long, e.g. 10s")
    parser.add_argument("--count", type=int, default=None, help="stop after this many messages")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--regions", type=int, default=3, help="regions per app")
    parser.add_argument("--instances", type=int, default=2, help="machines per app and region")
    parser.add_argument("--json-fraction", type=float, default=0.35)
    parser.add_argument(
        "--corpus", default=None, help="directory of *.log files (default: the shipped sample)"
    )
    parser.add_argument(
        "--spread",
        type=_duration_arg,
        default=None,
        help="event times spread over this much of the past, e.g. 2d",
    )
    parser.add_argument("--dry-run", action="store_true", help="only generate --count messages and time it")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = parser.parse_args(argv)
    if args.count is None and args.duration is None and args.dry_run:
        parser.error("--dry-run needs --count")

    start_ns = span_ns = None
    if args.spread is not None:
        span_ns = int(args.spread * _NS)
        start_ns = time.time_ns() - span_ns
    generator = FlyLogGenerator(
        seed=args.seed,
        apps=args.apps,
        regions=args.regions,
        instances=args.instances,
        systems=sample_systems(args.corpus) if args.corpus else None,
        json_fraction=args.json_fraction,
        start_ns=start_ns,
        span_ns=span_ns or 0,
    )
    began = time.perf_counter()
    if args.dry_run:
        sent = 0
        nbytes = 0
        while sent < args.count:
            batch = generator.messages(min(10_000, args.count - sent))
            sent += len(batch)
            nbytes += sum(len(payload) for _, payload in batch)
    else:
        try:
            import uvloop  # the publisher should not be the bottleneck of a benchmark

            run: Callable[[Any], int] = uvloop.run
        except ImportError:
            run = asyncio.run
        sent = run(publish(args.url, generator, args.rate, args.duration, count=args.count))
        nbytes = 0
    seconds = time.perf_counter() - began
    result = {
        "sent": sent,
        "seconds": round(seconds, 3),
        "rate_per_s": round(sent / seconds) if seconds else 0,
    }
    if args.dry_run:
        result["avg_bytes"] = round(nbytes / sent) if sent else 0
    if args.json:
        print(json.dumps(result))
    else:
        verb = "generated" if args.dry_run else "published"
        print(f"{verb} {sent} messages in {seconds:.2f} s ({result['rate_per_s']} msg/s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
