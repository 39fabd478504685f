"""Fly log traffic for the storage measure: each machine's own lines, in order, never repeated verbatim.

The LogHub samples hold 2,000 lines per system, far fewer than one busy
partition-hour, and archiver.demo.loadgen draws lines at random (with
1,024 pre-built JSON lines per system), so a compacted hour there repeats
each line many times: free matches for zstd's window inside a Parquet page
that gzip's 32 KiB window mostly cannot reach. That flatters the archive.
Here instead:

* every machine reads its system's lines in order (real logs are in time
  order) from its own starting line, so neighbouring rows of a machine are
  neighbouring lines of a real log;
* each machine's pass over the 2,000 lines is its own *variant*: every run of
  hex digits holding a digit (numbers, block and request ids, addresses,
  embedded times) is shifted by an amount drawn per machine and pass, keeping
  its length and alphabet, so the templates recur (as they do in real logs)
  but a line comes back verbatim only where it holds no digit at all (as
  "Configuring firecracker" does in real logs), on no two machines and in
  no two passes otherwise;
* 35% of an app machine's lines are JSON written by that machine's logger
  (zap, Cloud Logging, log15, pino or structlog: one per machine), with the
  line's own level and the event time where that logger puts it; 1% of all
  messages come from Fly's runner; the envelope is
  :func:`archiver.demo.flymessage.fly_message`.

Apps, regions and weights are archiver.demo.loadgen's: app *i* weighted
1/(i+1), each in ``regions`` regions with ``instances`` machines. With one
system every app speaks it; with several, app *i* speaks system *i* mod n.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from archiver.demo.corpus import LEVELS, REGIONS, RUNNER_MESSAGES, default_app_names, level_of
from archiver.demo.flymessage import fly_message

JSON_FRACTION = 0.35
RUNNER_FRACTION = 0.01
_HEX_RUN = re.compile(r"[0-9a-fA-F]*[0-9][0-9a-fA-F]*")
_NS = 1_000_000_000


def _shift_run(run: str, amount: int) -> str:
    """A run of hex digits moved by ``amount`` within its own alphabet and length (decimal stays decimal)."""
    if run.isdigit():
        return str((int(run) + amount) % 10 ** len(run)).zfill(len(run))
    upper = run.isupper()
    value = (int(run, 16) + amount) % 16 ** len(run)
    text = f"{value:0{len(run)}x}"
    return text.upper() if upper else text


def variant(line: str, amount: int) -> str:
    """The line with every run of hex digits holding a digit shifted by ``amount`` (0: the line itself)."""
    if amount == 0:
        return line
    return _HEX_RUN.sub(lambda m: _shift_run(m[0], amount), line)


def _utc(ns: int) -> str:
    seconds, fraction = divmod(ns, _NS)
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def app_json(style: int, text: str, level: tuple[object, ...], ns: int, component: str, pid: int) -> str:
    """The line as one of five JSON loggers writes it (the levels as spelled in archiver.demo.corpus.LEVELS)."""
    record: dict[str, object]
    if style == 0:  # zap
        record = {
            "level": level[2],
            "ts": ns / _NS,
            "caller": f"{component}/handler.go:{pid % 380 + 20}",
            "msg": text,
        }
    elif style == 1:  # Google Cloud Logging
        record = {"severity": level[3], "message": text, "component": component}
    elif style == 2:  # log15
        record = {"t": _utc(ns), "lvl": level[4], "msg": text}
    elif style == 3:  # pino
        record = {"level": level[5], "time": ns // 1_000_000, "pid": pid, "hostname": component, "msg": text}
    else:  # structlog
        record = {"event": text, "level": level[6], "logger": f"{component}.worker", "timestamp": _utc(ns)}
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Machine:
    """One machine: where its next line comes from."""

    app: str
    region: str
    instance: str
    host: str
    lines: Sequence[str]
    system: str
    style: int
    pid: int
    position: int
    #: Seeds the shift of each pass (see :func:`variant`): no two machines share a pass's text.
    salt: int
    variants: dict[int, list[str]] = field(default_factory=dict)

    def next_line(self) -> str:
        """The machine's next line: its log in order, each pass its own variant."""
        loop, index = divmod(self.position, len(self.lines))
        self.position += 1
        cached = self.variants.get(loop)
        if cached is None:
            self.variants.clear()  # one pass at a time per machine
            amount = random.Random(self.salt * 1_000_003 + loop).randrange(1, 1 << 62)
            cached = self.variants[loop] = [variant(line, amount) for line in self.lines]
        return cached[index]


class Traffic:
    """Messages of apps x regions x machines, weighted 1/(i+1) by app, in the order of the times given."""

    def __init__(
        self, systems: dict[str, list[str]], *, apps: int, regions: int, instances: int, seed: int
    ) -> None:
        """``systems``: lines by system; app *i* speaks system *i* mod their count (sorted by name)."""
        rng = random.Random(seed)
        self.rng = random.Random(rng.getrandbits(64))
        names = sorted(systems)
        self.machines: list[Machine] = []
        weights: list[float] = []
        for index, app in enumerate(default_app_names(apps)):
            system = names[index % len(names)]
            lines = systems[system]
            for region in rng.sample(REGIONS, regions):
                for _ in range(instances):
                    self.machines.append(
                        Machine(
                            app,
                            region,
                            f"{rng.getrandbits(56):014x}",
                            f"{rng.getrandbits(16):04x}",
                            lines,
                            system.lower(),
                            rng.randrange(5),
                            rng.randrange(300, 700),
                            rng.randrange(len(lines)),
                            rng.getrandbits(32),
                        )
                    )
                    weights.append(1.0 / (index + 1) / (regions * instances))
        total = sum(weights)
        self.cumulative = []
        running = 0.0
        for weight in weights:
            running += weight / total
            self.cumulative.append(running)

    def _pick(self) -> Machine:
        draw = self.rng.random()
        lo, hi = 0, len(self.cumulative) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cumulative[mid] < draw:
                lo = mid + 1
            else:
                hi = mid
        return self.machines[lo]

    def messages(self, times_ns: Sequence[int]) -> Iterator[tuple[str, str, bytes]]:
        """(app, region, payload) for each event time, in order."""
        random_ = self.rng.random
        for ns in times_ns:
            machine = self._pick()
            if random_() < RUNNER_FRACTION:
                text = RUNNER_MESSAGES[int(random_() * len(RUNNER_MESSAGES))].format(app=machine.app)
                provider = "runner"
            else:
                provider = "app"
                text = machine.next_line()
                if random_() < JSON_FRACTION:
                    level = LEVELS[level_of(text, random_())]
                    text = app_json(machine.style, text, level, ns, machine.system, machine.pid)
            payload = fly_message(machine.app, machine.region, text, _utc(ns), instance=machine.instance,
                                  host=machine.host, provider=provider)  # fmt: skip
            yield machine.app, machine.region, payload
