"""Compacted files and what they supersede: their names, their metadata, and the rule every reader applies.

A compacted file is named ``c-<digest>-<part>of<count>.parquet``: ``digest`` is
16 hex digits of the SHA-256 of the sorted names of the files it was made from,
``part`` its index among the ``count`` files of that compaction (a *group*).
The part count is in the name so a reader can tell from a listing alone
whether a group is complete: every part is written before any input is
deleted, so an incomplete group means a compactor is still writing (or
crashed) and its inputs are all still there.

Each part carries, in its Parquet key-value metadata under
:data:`REPLACES_KEY`, the JSON list of every file name the group supersedes,
transitively: when an input was itself compacted, its own list is included.

:func:`resolve` is the one rule, used by ``archiver query`` and by the
compactor, that turns the listing of one hour partition into the files to
read, so that no row is seen twice or missed whatever state compaction left:

* an incomplete group is ignored (its inputs are still listed);
* a complete group whose replaced set is a strict subset of another complete
  group's is ignored (two compactors with different views: the larger wins;
  equal sets keep the group with the smallest name);
* every other file named in a kept group's replaced set is ignored.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import orjson

COMPACT_PREFIX = "c-"
#: Key-value metadata key of a compacted file: JSON list of the file names it supersedes.
REPLACES_KEY = b"archiver.replaces"
_NAME = re.compile(r"c-(?P<digest>[0-9a-f]{16})-(?P<part>\d+)of(?P<count>\d+)\.parquet\Z")


@dataclass(frozen=True, slots=True)
class CompactName:
    """The parts of a compacted file's name."""

    digest: str
    part: int
    count: int

    @property
    def group(self) -> tuple[str, int]:
        """Identity of the compaction that wrote it: digest and part count."""
        return self.digest, self.count


def input_digest(names: Iterable[str]) -> str:
    """16 hex digits of SHA-256 over the sorted input names: the same inputs always give the same outputs."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def compact_name(digest: str, part: int, count: int) -> str:
    """Name of part ``part`` (0-based) of ``count`` compacted files made from inputs of ``digest``."""
    return f"{COMPACT_PREFIX}{digest}-{part}of{count}.parquet"


def parse_compact_name(name: str) -> CompactName | None:
    """The parts of a compacted file's name; None for any other file."""
    match = _NAME.match(name)
    if match is None:
        return None
    part, count = int(match["part"]), int(match["count"])
    return CompactName(match["digest"], part, count) if 0 <= part < count else None


def replaces_from_metadata(metadata: Mapping[bytes, bytes] | None) -> frozenset[str] | None:
    """The replaced names in a compacted file's key-value metadata; None when absent or unreadable."""
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


def replaces_metadata(names: Iterable[str]) -> dict[bytes, bytes]:
    """Key-value metadata recording ``names`` as superseded (sorted, so it is deterministic)."""
    return {REPLACES_KEY: orjson.dumps(sorted(set(names)))}


def groups_of(names: Iterable[str]) -> dict[tuple[str, int], list[str]]:
    """Compacted files by group, each group's names sorted by part."""
    out: dict[tuple[str, int], list[tuple[int, str]]] = {}
    for name in names:
        parsed = parse_compact_name(name)
        if parsed is not None:
            out.setdefault(parsed.group, []).append((parsed.part, name))
    return {group: [n for _, n in sorted(parts)] for group, parts in out.items()}


def metadata_needed(names: Sequence[str]) -> list[str]:
    """One part of each complete group whose replaced set :func:`resolve` needs; empty in the common cases.

    Nothing is needed when the partition holds no compacted file, or exactly
    one complete group and nothing else.
    """
    groups = groups_of(names)
    complete = {g: parts for g, parts in groups.items() if len(parts) == g[1]}
    if not complete:
        return []
    if len(groups) == 1 and len(complete) == 1 and len(names) == len(next(iter(complete.values()))):
        return []
    return [parts[0] for parts in complete.values()]


@dataclass(frozen=True, slots=True)
class Resolution:
    """What to read in one partition, and which complete groups were kept."""

    live: list[str]
    kept: dict[tuple[str, int], frozenset[str]]


def resolve(names: Sequence[str], replaces: Mapping[str, frozenset[str] | None]) -> Resolution:
    """The files of one partition to read (see the module docstring).

    ``replaces`` maps a part of each complete group (those :func:`metadata_needed`
    names) to its replaced set; a group whose set is unknown (unreadable
    metadata) is treated as incomplete, so its inputs are read if still there.
    """
    groups = groups_of(names)
    complete: dict[tuple[str, int], frozenset[str]] = {}
    for group, parts in groups.items():
        if len(parts) != group[1]:
            continue
        known = [replaces[p] for p in parts if replaces.get(p) is not None]
        if known:
            complete[group] = known[0] or frozenset()
        elif len(groups) == 1 and len(parts) == len(names):
            complete[group] = frozenset()  # the only files there: nothing else to supersede
    kept: dict[tuple[str, int], frozenset[str]] = {}
    for group, covered in complete.items():
        beaten = any(
            other != group
            and (covered < theirs or (covered == theirs and min(groups[other]) < min(groups[group])))
            for other, theirs in complete.items()
        )
        if not beaten:
            kept[group] = covered
    gone = frozenset().union(*kept.values()) if kept else frozenset()
    live = []
    for name in names:
        parsed = parse_compact_name(name)
        if parsed is not None:
            if parsed.group in kept and name not in gone:
                live.append(name)
        elif name not in gone:
            live.append(name)
    return Resolution(live, kept)


def superseded_by(
    names: Sequence[str],
    replaces: Mapping[str, frozenset[str] | None],
    covered: frozenset[str],
    own: set[str],
) -> list[str]:
    """Files of a partition that a complete group replacing ``covered`` makes redundant (safe to delete).

    Those named in ``covered``, and compacted files (any group, complete or not)
    whose own replaced set is within ``covered``; never the group's own files ``own``.
    """
    group_sets: dict[tuple[str, int], frozenset[str] | None] = {}
    for name, value in replaces.items():
        parsed = parse_compact_name(name)
        if parsed is not None and value is not None:
            group_sets[parsed.group] = value
    out = []
    for name in names:
        if name in own:
            continue
        parsed = parse_compact_name(name)
        their = group_sets.get(parsed.group) if parsed is not None else None
        if name in covered or (their is not None and their <= covered):
            out.append(name)
    return out
