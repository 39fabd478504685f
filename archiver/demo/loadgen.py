"""Fly-shaped log generator for ``archiver demo``, tests and benchmarks.

Messages look like the Fly log stream (see the project's notes): subject
``logs.<app>.<region>.<instance>``, a JSON envelope whose fields are all
strings, ``log.level`` nearly always ``info``, and a ``message`` that is either
a plain text line (real LogHub text shipped in ``archiver/demo/sample``) or the app's
own JSON log line carrying its real level under ``level``/``severity``/``lvl``
(strings or pino numbers).

Generation is pure and deterministic for a seed, except that timestamps read
the clock when no ``start_ns`` is given. The sample text and its tables live in
:mod:`archiver.demo.corpus`, the message envelope in :mod:`archiver.demo.flymessage`
and NATS publishing in :mod:`archiver.demo.publish`, so this module is only the
generator. Run ``python -m archiver.demo.publish --help`` for the benchmark publisher.
"""

from __future__ import annotations

import bisect
import json
import random
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from archiver.demo.corpus import LEVELS, REGIONS, RUNNER_MESSAGES, default_app_names, level_of, sample_systems
from archiver.demo.flymessage import fly_message, fly_subject

# Where the event time goes inside an app's JSON line.
_TIME_NONE, _TIME_SECONDS, _TIME_MILLIS, _TIME_RFC3339 = range(4)
_PLACEHOLDER = "@@T@@"
# Where the generator pastes a pre-escaped message literal and the timestamp into the envelope.
_MESSAGE_AT, _TIMESTAMP_AT = "@@MESSAGE@@", "@@TIMESTAMP@@"
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
        return fly_subject(self.app, self.region, self.instance)


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
        app_names = list(apps) if not isinstance(apps, int) else default_app_names(apps)
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
            runner = [_escaped(text.format(app=inst.app)) for text in RUNNER_MESSAGES]
            app_head, to_timestamp, closing = _envelope(inst, "app")
            runner_head = _envelope(inst, "runner")[0]
            self._sources.append(
                (inst.subject, app_head, runner_head, plain[inst.system], json_pools[inst.system], runner)
            )
        # Only the fields before the message differ between machines: what follows it is the same for all.
        self._to_timestamp, self._closing = to_timestamp, closing

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
        to_timestamp, closing = self._to_timestamp, self._closing
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
            append((subject, f"{head}{message}{to_timestamp}{ts}{closing}".encode()))
        return out

    def batches(self, size: int) -> Iterator[list[tuple[str, bytes]]]:
        """Endless batches of ``size`` messages."""
        while True:
            yield self.messages(size)


def _envelope(inst: Instance, provider: str) -> tuple[str, str, str]:
    """:func:`fly_message`'s envelope in three: up to ``"message":``, then up to the timestamp's text, then the rest."""
    text = fly_message(
        inst.app,
        inst.region,
        _MESSAGE_AT,
        _TIMESTAMP_AT,
        instance=inst.instance,
        host=inst.host,
        provider=provider,
    ).decode()
    head, rest = text.split(f'"{_MESSAGE_AT}"')
    to_timestamp, closing = rest.split(_TIMESTAMP_AT)
    return head, to_timestamp, closing


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


def _json_pool(rng: random.Random, lines: Sequence[str], system: str) -> list[tuple[int, str, str]]:
    """Pre-built app JSON lines, escaped for the envelope, split where the event time goes."""
    pool: list[tuple[int, str, str]] = []
    component = system.lower()
    for _ in range(1 << _JSON_POOL_BITS):
        text = lines[rng.randrange(len(lines))]
        draw = rng.random()
        level = LEVELS[level_of(text, draw)]
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
