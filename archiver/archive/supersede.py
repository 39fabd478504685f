"""Compacted files and what they supersede: their names, their metadata, and the rule every reader applies.

The unit is one app-hour: every file of one app (as keys give it back) in one
UTC hour, of both layouts, named by its *relative name*: the key below
``app=<segment>/date=<D>/`` (a v2 file's name, or ``hour=HH/region=R/<name>``
for a v1 file). A compacted file is named ``<YYYYMMDDTHH>-c-<digest>-<part>of<count>.parquet``
(v1 compaction wrote ``c-<digest>-<part>of<count>.parquet`` in each
``hour=/region=`` folder), a day roll-up ``<YYYYMMDD>-d-<digest>-<part>of<count>.parquet``: ``digest`` is 16 hex digits of the SHA-256 of the
sorted relative names of the files it was made from, ``part`` its index among
the ``count`` files of that compaction (a *group*, identified by its folder,
digest and count). The part count is in the name so a reader can tell from a
listing alone whether a group is complete: every part is written before any
input is deleted, so an incomplete group means a compactor is still writing
(or crashed) and its inputs are all still there.

Each part carries, in its Parquet key-value metadata under
:data:`REPLACES_KEY`, the JSON list of every file the group supersedes,
transitively (a compacted input's own list is included), as names relative
to the folder of the file carrying them: relative names for v2 parts, plain
names for v1 parts (:func:`replaced_names` qualifies them).

:func:`resolve` is the one rule, used by ``archiver query`` and by the
compactor, that turns the listing of one app-hour into the files to read, so
that no row is seen twice or missed whatever state compaction left:

* an incomplete group is ignored (its inputs are still listed);
* a complete group whose replaced set is a strict subset of another complete
  group's is ignored (two compactors with different views: the larger wins;
  equal sets keep the group with the smallest name);
* every other file named in a kept group's replaced set is ignored;
* the rule is about sets of names, so it holds for any listing that includes
  every file a group names: a day file's group (whose replaced set holds the
  day's hour groups, transitively) is resolved with the listing of any one of
  its hours, or of its whole day;
* an imported file is known by its batch digest (:func:`identity`): the same
  batch imported by v1 (``hour=HH/region=R/i-<d>.parquet``) and again by v2
  (``<YYYYMMDDTHH>-i-<d>.parquet``) holds the same rows, so only one is read
  and a replaced set naming either covers both.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import orjson

from archiver.archive.layout import DAY_FILE_MARK, day_stamp, hour_stamp

#: Key-value metadata key of a compacted file: JSON list of the file names it supersedes.
REPLACES_KEY = b"archiver.replaces"
_NAME = re.compile(
    r"(?P<dir>(?:[^/]*/)*)(?:[0-9]{8}T[0-9]{2}-c|[0-9]{8}-d|c)-(?P<digest>[0-9a-f]{16})-(?P<part>[0-9]+)of(?P<count>[0-9]+)"
    r"\.parquet\Z"
)
_IMPORTED = re.compile(r"(?:[^/]*/)*(?:[0-9]{8}T[0-9]{2}-)?i-(?P<digest>[0-9a-f]{24})\.parquet\Z")


@dataclass(frozen=True, slots=True)
class Group:
    """Identity of one compaction: the folder of its parts (relative; "" for v2), digest and part count."""

    directory: str
    digest: str
    count: int


@dataclass(frozen=True, slots=True)
class CompactName:
    """The parts of a compacted file's relative name."""

    directory: str
    digest: str
    part: int
    count: int

    @property
    def group(self) -> Group:
        """Identity of the compaction that wrote it."""
        return Group(self.directory, self.digest, self.count)


def input_digest(names: Iterable[str]) -> str:
    """16 hex digits of SHA-256 over the sorted input names: the same inputs always give the same outputs."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def compact_name(hour_ns: int, digest: str, part: int, count: int) -> str:
    """Name of part ``part`` (0-based) of ``count`` compacted files of one hour made from inputs of ``digest``."""
    return f"{hour_stamp(hour_ns)}-c-{digest}-{part}of{count}.parquet"


def day_file_name(day_ns: int, digest: str, part: int, count: int) -> str:
    """Name of part ``part`` (0-based) of ``count`` files of one day's roll-up made from inputs of ``digest``."""
    return f"{day_stamp(day_ns)}{DAY_FILE_MARK}{digest}-{part}of{count}.parquet"


def parse_compact_name(name: str) -> CompactName | None:
    """The parts of a compacted file's (relative) name, either layout; None for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    part, count = int(match["part"]), int(match["count"])
    return CompactName(match["dir"], match["digest"], part, count) if 0 <= part < count else None


def identity(name: str) -> str:
    """What makes two relative names the same rows: ``i-<digest>`` for an imported batch, else the name."""
    match = _IMPORTED.match(name)
    return name if match is None else f"i-{match['digest']}"


def replaces_from_metadata(metadata: Mapping[bytes, bytes] | None) -> frozenset[str] | None:
    """The replaced names in a compacted file's key-value metadata (as stored); None when absent or unreadable."""
    raw = (metadata or {}).get(REPLACES_KEY)
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return frozenset(value)


def replaced_names(name: str, metadata: Mapping[bytes, bytes] | None) -> frozenset[str] | None:
    """The relative names the compacted file ``name`` (relative) supersedes; None when unknown."""
    stored = replaces_from_metadata(metadata)
    directory = name.rpartition("/")[0]
    if stored is None or not directory:
        return stored
    return frozenset(f"{directory}/{entry}" for entry in stored)


def replaces_metadata(names: Iterable[str]) -> dict[bytes, bytes]:
    """Key-value metadata recording ``names`` as superseded (sorted, so it is deterministic)."""
    return {REPLACES_KEY: orjson.dumps(sorted(set(names)))}


def groups_of(names: Iterable[str]) -> dict[Group, list[str]]:
    """Compacted files by group, each group's names sorted by part."""
    out: dict[Group, list[tuple[int, str]]] = {}
    for name in names:
        parsed = parse_compact_name(name)
        if parsed is not None:
            out.setdefault(parsed.group, []).append((parsed.part, name))
    return {group: [n for _, n in sorted(parts)] for group, parts in out.items()}


def metadata_needed(names: Sequence[str]) -> list[str]:
    """One part of each complete group whose replaced set :func:`resolve` needs; empty in the common cases.

    Nothing is needed when the app-hour holds no compacted file, or exactly
    one complete group and nothing else.
    """
    groups = groups_of(names)
    complete = {g: parts for g, parts in groups.items() if len(parts) == g.count}
    if not complete:
        return []
    if len(groups) == 1 and len(complete) == 1 and len(names) == len(next(iter(complete.values()))):
        return []
    return [parts[0] for parts in complete.values()]


class Resolution(NamedTuple):
    """What to read in one app-hour, which complete groups were kept, and imported twins left out."""

    live: list[str]
    kept: dict[Group, frozenset[str]]
    twins: list[str]


def resolve(names: Sequence[str], replaces: Mapping[str, frozenset[str] | None]) -> Resolution:
    """The files of one app-hour to read (see the module docstring).

    ``replaces`` maps a part of each complete group (those :func:`metadata_needed`
    names) to its replaced set (:func:`replaced_names`); a group whose set is
    unknown (unreadable metadata) is treated as incomplete, so its inputs are
    read if still there.
    """
    groups = groups_of(names)
    complete: dict[Group, frozenset[str]] = {}
    for group, parts in groups.items():
        if len(parts) != group.count:
            continue
        known = [replaces[p] for p in parts if replaces.get(p) is not None]
        if known:
            complete[group] = known[0] or frozenset()
        elif len(groups) == 1 and len(parts) == len(names):
            complete[group] = frozenset()  # the only files there: nothing else to supersede
    kept: dict[Group, frozenset[str]] = {}
    for group, covered in complete.items():
        beaten = any(
            other != group
            and (covered < theirs or (covered == theirs and min(groups[other]) < min(groups[group])))
            for other, theirs in complete.items()
        )
        if not beaten:
            kept[group] = covered
    gone = {identity(n) for covered in kept.values() for n in covered}
    live, twins, seen = [], [], set()
    for name in sorted(names, key=lambda n: ("/" in n, n)):  # v2 names first: a twin read is a v2 one
        parsed = parse_compact_name(name)
        if parsed is not None:
            if parsed.group in kept and name not in gone:
                live.append(name)
        elif identity(name) in seen:
            twins.append(name)
        elif identity(name) not in gone:
            live.append(name)
            seen.add(identity(name))
    order = {name: i for i, name in enumerate(names)}
    return Resolution(sorted(live, key=order.__getitem__), kept, twins)


def superseded_by(
    names: Sequence[str],
    replaces: Mapping[str, frozenset[str] | None],
    covered: frozenset[str],
    own: set[str],
) -> list[str]:
    """Files of an app-hour that a complete group replacing ``covered`` makes redundant (safe to delete).

    Those named in ``covered`` (an imported file by its batch), and compacted
    files (any group, complete or not) whose own replaced set is within
    ``covered``; never the group's own files ``own``.
    """
    group_sets: dict[Group, frozenset[str]] = {}
    for name, value in replaces.items():
        parsed = parse_compact_name(name)
        if parsed is not None and value is not None:
            group_sets[parsed.group] = value
    identities = {identity(n) for n in covered}
    out = []
    for name in names:
        if name in own:
            continue
        parsed = parse_compact_name(name)
        their = group_sets.get(parsed.group) if parsed is not None else None
        if identity(name) in identities or (their is not None and {identity(n) for n in their} <= identities):
            out.append(name)
    return out
