"""The spool's journal: intents and completions of batches, append-only and fsynced.

One JSON object a line: ``{"t": "intent", ...}`` before a batch's first upload
(its partition, sequence range, detach time and object key per hour) and
``{"t": "done", ...}`` after its last. See :mod:`archiver.service.spool` for how the
two make every crash point safe. A torn last line (OS crash) is ignored: it
was never acted on.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import orjson

JOURNAL_NAME = "journal"


@dataclass(frozen=True, slots=True)
class Intent:
    """A batch about to be uploaded: partition, sequence range, and its files' keys by hour."""

    app_segment: str
    region_segment: str
    first_seq: int
    end_seq: int
    keys: dict[int, str] = field(default_factory=dict)
    #: The detach time the batch was encoded with (malformed rows' timestamp), so a retry is identical.
    received_ns: int = 0

    @property
    def batch_id(self) -> tuple[str, str, int]:
        """Identity of the batch in the journal."""
        return (self.app_segment, self.region_segment, self.first_seq)


@dataclass(slots=True)
class Journal:
    """What the journal says: open intents and completed batch ranges per partition.

    The one rule of what a record's fate is after a restart: :meth:`archived` (a done batch
    holds it), :meth:`open_intent` (a batch journaled, not done: re-sent under its keys),
    :meth:`covers` (either: never buffered again).
    """

    open: dict[tuple[str, str, int], Intent] = field(default_factory=dict)
    done: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    #: ``done`` merged per partition into (starts, ends), built on first use (the journal is read-only then).
    _merged: dict[tuple[str, str], tuple[list[int], list[int]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def archived(self, app_segment: str, region_segment: str, seq: int) -> bool:
        """True when ``seq`` of that partition belongs to a completed batch."""
        # Recovery asks this for every spooled record, so it must not scan every range. Merged, one
        # bisect answers even where a batch replayed after a crash spans an older done range.
        if self._merged is None:
            self._merged = {partition: _merge(ranges) for partition, ranges in self.done.items()}
        merged = self._merged.get((app_segment, region_segment))
        if merged is None:
            return False
        starts, ends = merged
        i = bisect.bisect_right(starts, seq) - 1
        return i >= 0 and seq < ends[i]

    def open_intent(self, app_segment: str, region_segment: str, seq: int) -> Intent | None:
        """The open intent whose batch holds ``seq`` of that partition, if any."""
        for intent in self.open.values():
            if (intent.first_seq <= seq < intent.end_seq
                    and intent.app_segment == app_segment and intent.region_segment == region_segment):  # fmt: skip
                return intent
        return None

    def covers(self, app_segment: str, region_segment: str, seq: int) -> bool:
        """True when ``seq`` of that partition belongs to a completed or an open (re-sent) batch."""
        return self.archived(app_segment, region_segment, seq) or (
            self.open_intent(app_segment, region_segment, seq) is not None
        )


def _merge(ranges: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Sorted ranges merged where they overlap or touch, as (starts, ends)."""
    starts: list[int] = []
    ends: list[int] = []
    for first, end in sorted(ranges):
        if ends and first <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(first)
            ends.append(end)
    return starts, ends


class JournalFile:
    """The journal file of one spool directory (written from one thread only)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = -1

    def open(self) -> Journal:
        """Read what the journal holds and open it for appending."""
        journal = self.read()
        self._fd = os.open(self.directory / JOURNAL_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        return journal

    def write_intent(self, intent: Intent) -> None:
        """Append an intent and fsync it."""
        self._write(_intent_entry(intent))

    def write_done(self, intent: Intent) -> None:
        """Append a done record and fsync it."""
        self._write({"t": "done", "a": intent.app_segment, "r": intent.region_segment,
                     "f": intent.first_seq, "e": intent.end_seq})  # fmt: skip

    def close(self) -> None:
        """fsync and close."""
        if self._fd >= 0:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1

    def _write(self, entry: dict[str, object]) -> None:
        os.write(self._fd, orjson.dumps(entry) + b"\n")
        os.fsync(self._fd)

    def read(self) -> Journal:
        """Parse the journal: open intents and done ranges."""
        journal = Journal()
        path = self.directory / JOURNAL_NAME
        if not path.exists():
            return journal
        for line in path.read_bytes().splitlines():
            try:
                entry = orjson.loads(line)
            except orjson.JSONDecodeError:
                break  # a torn last line
            batch = (entry["a"], entry["r"], entry["f"])
            if entry["t"] == "intent":
                keys = {int(h): k for h, k in entry["k"].items()}
                journal.open[batch] = Intent(entry["a"], entry["r"], entry["f"], entry["e"], keys, entry["n"])
            else:
                journal.open.pop(batch, None)
                journal.done.setdefault((entry["a"], entry["r"]), []).append((entry["f"], entry["e"]))
        for ranges in journal.done.values():
            ranges.sort()
        return journal

    def compact(self, oldest_seq: int) -> None:
        """Rewrite keeping what concerns records at or after ``oldest_seq`` (atomic replace)."""
        # Entries about records in deleted segments can never matter again; everything touching a
        # retained segment must stay, or a replay after a crash would upload those records twice.
        journal = self.read()
        tmp = self.directory / (JOURNAL_NAME + ".tmp")
        with tmp.open("wb") as out:
            for (app, region), ranges in journal.done.items():
                for first, end in ranges:
                    if end > oldest_seq:
                        entry = {"t": "done", "a": app, "r": region, "f": first, "e": end}
                        out.write(orjson.dumps(entry) + b"\n")
            for intent in journal.open.values():
                out.write(orjson.dumps(_intent_entry(intent)) + b"\n")
            out.flush()
            os.fsync(out.fileno())
        os.close(self._fd)
        os.replace(tmp, self.directory / JOURNAL_NAME)
        fsync_dir(self.directory)
        self._fd = os.open(self.directory / JOURNAL_NAME, os.O_WRONLY | os.O_APPEND, 0o600)


def _intent_entry(intent: Intent) -> dict[str, object]:
    return {"t": "intent", "a": intent.app_segment, "r": intent.region_segment, "f": intent.first_seq,
            "e": intent.end_seq, "n": intent.received_ns, "k": {str(h): k for h, k in intent.keys.items()}}  # fmt: skip


def fsync_dir(directory: Path) -> None:
    """Make a directory's entries (new, renamed, deleted files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
