"""What compaction works on and what it must do: units of work, found by listing, and the decision for one.

A *unit* is one app's files of one period: an app-hour, or an app-day (a
*roll-up*, :data:`NS_PER_DAY`). Its files are those whose key gives back its
app value and whose time lies in it, in either layout and under any of the
app's segments (its v1 segment may differ); they are named by their relative
name (the key below ``app=<segment>/date=<D>/``, see
:mod:`archiver.archive.supersede`). Compacted outputs go under the unit's v2
segment: ``<YYYYMMDDTHH>-c-...`` for an hour, ``<YYYYMMDD>-d-...`` for a day.
An hour's files never include a day file (it holds every hour: only day
units take it); a day's files are every file of the day, so a roll-up merges
the day's hour groups, and whatever arrived late (flushes, imports, hours not
compacted yet), with the day files of an earlier roll-up. A day is rolled up
once it ended :data:`ROLLUP_GRACE_S` ago (the service adds COMPACT_AFTER):
its hours had their compaction by then.

From a listing alone a unit either is *done* (exactly the parts of one
complete v2 compaction) or needs work (:func:`needs_work`); the backlog is
the closed units that need work. Deciding what the work is needs the
replaced sets of its compacted groups (:func:`probes` names one part of
each), then :func:`decide` applies the supersede rule every reader applies
(:func:`archiver.archive.supersede.resolve`): merge the live files, or, when
the live files already are one complete v2 group, only delete what it
supersedes (leftovers of a crash or a slower compactor).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from archiver.archive.escaping import segments_of, value_segment
from archiver.archive.layout import NS_PER_DAY, NS_PER_HOUR, day_prefix, day_stamp, hour_stamp, parse_key
from archiver.archive.navigator import AppSelection, Span, files_of_days, list_files
from archiver.archive.supersede import compact_name, day_file_name, groups_of, resolve, superseded_by
from archiver.storage.interface import ObjectInfo, Storage

#: Concurrent listings of one scan.
LIST_CONCURRENCY = 16
#: A day is rolled up once it ended this long ago (and COMPACT_AFTER in the service): its last hour's
#: compaction is done by then, and late files are rare.
ROLLUP_GRACE_S = 3600


class WorkUnit(NamedTuple):
    """One unit of compaction: the files of one app (as keys give it back) in ``[start_ns, start_ns + length_ns)``."""

    app: str
    start_ns: int
    length_ns: int = NS_PER_HOUR

    @property
    def end_ns(self) -> int:
        """When the period ends: the unit is closed once this is COMPACT_AFTER past."""
        return self.start_ns + self.length_ns

    @property
    def segment(self) -> str:
        """The app's v2 segment: where the outputs go (and the claims)."""
        return value_segment(self.app)

    @property
    def is_day(self) -> bool:
        """Whether it is a day's roll-up (else an hour)."""
        return self.length_ns == NS_PER_DAY

    @property
    def stamp(self) -> str:
        """What every output name starts with: ``YYYYMMDDTHH`` for an hour, ``YYYYMMDD`` for a day."""
        return day_stamp(self.start_ns) if self.is_day else hour_stamp(self.start_ns)

    @property
    def directory(self) -> str:
        """``app=<segment>/date=<D>/``: the folder of the outputs."""
        return day_prefix(self.segment, self.start_ns)

    @property
    def when(self) -> str:
        """The period as people read it: ``2026-11-24T13Z`` for an hour, ``2026-11-24`` for a day."""
        day = f"{self.stamp[:4]}-{self.stamp[4:6]}-{self.stamp[6:8]}"
        return day if self.is_day else f"{day}T{self.stamp[9:11]}Z"

    @property
    def label(self) -> str:
        """The unit as people read it: the app and the UTC hour (or day)."""
        return f"{self.app} {self.when}"

    def prefixes(self) -> list[str]:
        """Listing prefixes of the unit's files, in every segment and layout of the app."""
        span = Span(self.start_ns, self.end_ns)
        return [p for segment in segments_of(self.app) for p in span.prefixes(segment)]

    def output_name(self, digest: str, part: int, count: int) -> str:
        """Name of output part ``part`` of ``count`` made from inputs of ``digest``."""
        if self.is_day:
            return day_file_name(self.start_ns, digest, part, count)
        return compact_name(self.start_ns, digest, part, count)


class UnitFiles:
    """One unit's listed files by relative name: keys, sizes, the region of v1 files, when each was written."""

    def __init__(self, infos: Iterable[ObjectInfo]) -> None:
        parsed = {info: key for info in infos if (key := parse_key(info.key)) is not None}
        self.keys = {p.relative_name: info.key for info, p in parsed.items()}
        self.sizes = {p.relative_name: info.size for info, p in parsed.items()}
        self.regions = {p.relative_name: p.region for p in parsed.values()}
        self.modified = {p.relative_name: info.modified_ns for info, p in parsed.items()}
        self.names = sorted(self.keys)


def is_one_group(names: Sequence[str]) -> bool:
    """Whether ``names`` are exactly the parts of one complete v2 compaction."""
    groups = groups_of(names)
    return len(groups) == 1 and (group := next(iter(groups))).directory == "" and len(names) == group.count


def needs_work(infos: Iterable[ObjectInfo]) -> bool:
    """Whether a unit's listing is anything but one complete v2 compaction (from the listing alone)."""
    return not is_one_group(UnitFiles(infos).names)


def probes(names: Sequence[str]) -> list[str]:
    """One part of every compacted group (complete or not): its replaced set decides what is live."""
    return [parts[0] for parts in groups_of(names).values()]


@dataclass(frozen=True, slots=True)
class Decision:
    """What one unit needs: the live files to merge and what the outputs replace, or only garbage to delete."""

    merge: list[str]
    covered: frozenset[str]
    garbage: list[str]


def decide(names: Sequence[str], replaces: Mapping[str, frozenset[str] | None]) -> Decision:
    """The work of a unit listed as ``names``, given the replaced set of each group's probe."""
    resolution = resolve(names, replaces)
    live = resolution.live
    if is_one_group(live):
        # Already compact: only what the group supersedes goes (left by a crash or a slower compactor).
        own = set(live)
        replaced = next((r for n in live if (r := replaces.get(n)) is not None), frozenset())
        return Decision([], frozenset(), superseded_by(names, replaces, replaced | own, own))
    covered = set(live) | set(resolution.twins)
    # Transitive: a compacted input's own replaced set (every part carries it; the probe read one).
    for parts in groups_of(live).values():
        covered |= next((r for p in parts if (r := replaces.get(p)) is not None), frozenset())
    return Decision(live, frozenset(covered), [])


def part_count(rows: int, input_bytes: int, target_bytes: int) -> int:
    """How many files keep each under ``target_bytes``, judging by the inputs' compressed bytes per row."""
    if rows == 0:
        return 1
    rows_per_file = max(1, target_bytes * rows // max(1, input_bytes))
    return -(-rows // rows_per_file)


async def list_unit(storage: Storage, unit: WorkUnit) -> list[ObjectInfo]:
    """The unit's files as listed now (both layouts, every segment of the app)."""
    wanted = AppSelection(tuple(segments_of(unit.app)), frozenset({unit.app}))
    found = await list_files(storage, unit.prefixes(), unit.start_ns, unit.end_ns, LIST_CONCURRENCY, wanted)
    return [ObjectInfo(f.key, f.size, f.modified_ns) for f in found if f.length_ns <= unit.length_ns]


async def list_units(
    storage: Storage,
    segments: Sequence[str],
    until_ns: int,
    since_ns: int | None = None,
    apps: AppSelection | None = None,
    days_until_ns: int | None = None,
) -> dict[WorkUnit, list[ObjectInfo]]:
    """The app-hours in ``[since_ns, until_ns)`` with files under ``segments`` (of the apps ``apps`` wants).

    Without ``since_ns`` every day of each segment is listed (one listing of its
    days, then one per day in range); with it, the day prefixes from its day on
    (one listing per app-day). An app under several segments is one unit. With
    ``days_until_ns``, the app-days that ended by then are units too (roll-ups),
    each with every file of its day.
    """
    out: dict[WorkUnit, list[ObjectInfo]] = {}
    for segment in segments:
        if since_ns is None:
            found = await files_of_days(storage, segment, None, until_ns, LIST_CONCURRENCY, apps)
        else:
            days = range(since_ns - since_ns % NS_PER_DAY, until_ns, NS_PER_DAY)
            prefixes = [day_prefix(segment, day) for day in days]
            found = await list_files(storage, prefixes, since_ns, until_ns, LIST_CONCURRENCY, apps)
        for file in found:
            info = ObjectInfo(file.key, file.size, file.modified_ns)
            if file.length_ns == NS_PER_HOUR and file.hour_ns + NS_PER_HOUR <= until_ns:
                out.setdefault(WorkUnit(file.app, file.hour_ns), []).append(info)
            day = file.hour_ns - file.hour_ns % NS_PER_DAY
            if days_until_ns is not None and day + NS_PER_DAY <= days_until_ns:
                out.setdefault(WorkUnit(file.app, day, NS_PER_DAY), []).append(info)
    return dict(sorted(out.items(), key=lambda item: work_order(item[0])))


def work_order(unit: WorkUnit) -> tuple[int, int, str]:
    """Oldest first, a day after its hours (its roll-up then finds them compacted)."""
    return unit.end_ns, unit.length_ns, unit.app
