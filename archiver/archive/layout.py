"""Where archive objects live: keys, file names, listing prefixes, and keys parsed back (layouts v2 and v1).

Layout v2 (schema version 2), relative to the archive prefix::

    app=<app>/date=<YYYY-MM-DD>/<name>.parquet
      live flush:  <YYYYMMDDTHHMMSS>Z-<writer>-<seq>.parquet         (the first event time of the file)
      compacted:   <YYYYMMDDTHH>-c-<digest>-<part>of<count>.parquet  (one closed hour of one app, all regions)
      imported:    <YYYYMMDDTHH>-i-<digest>.parquet                  (one source batch, one hour)
      day file:    <YYYYMMDD>-d-<digest>-<part>of<count>.parquet     (one closed day of one app, rolled up)

``date`` and the hour are those of the event timestamps in UTC; the region
is a column of the file. Every name starts with the UTC hour it holds, so the
files of app X in hour H are one listing of the prefix
``app=X/date=D/YYYYMMDDTHH`` (:func:`hour_prefix`), plus, for a day that has
ended, its day files: ``app=X/date=D/YYYYMMDD-d-`` (:func:`day_file_prefix`;
a day file holds all 24 hours, :attr:`ObjectKey.length_ns`). Coarse partitions keep
the number of folders (and of a table's live files, once days are merged)
small; file statistics prune finer.

Layout v1 (old archives, still read, and moved to v2 by compaction)::

    app=<app>/date=<YYYY-MM-DD>/hour=<HH>/region=<region>/<name>.parquet

Partition values are escaped by :mod:`archiver.archive.escaping` (each
layout its own way), so a key built here never leaves the prefix.
:func:`parse_key` recognises both layouts. ``_archiver/`` at the archive root
is reserved for the archiver's own objects; it never matches ``app=*``.
"""

from __future__ import annotations

import functools
import re
import time
from datetime import UTC, datetime
from typing import NamedTuple

from archiver.archive.escaping import decode_value, decode_value_v1

NS_PER_SECOND = 1_000_000_000
NS_PER_HOUR = 3600 * NS_PER_SECOND
NS_PER_DAY = 24 * NS_PER_HOUR
#: What a day file's name holds after its ``YYYYMMDD``.
DAY_FILE_MARK = "-d-"
PARQUET_SUFFIX = ".parquet"
#: Root folder of the archiver's own objects (claims); never a partition.
RESERVED_PREFIX = "_archiver/"

_DATE = r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
_KEY_V2 = re.compile(
    rf"app=(?P<app>[^/]+)/date={_DATE}/"
    r"(?P<name>(?P<day>[0-9]{8})(?:T(?P<hour>[0-9]{2})[^/]*|(?P<whole>-d-[^/]*))\.parquet)\Z"
)
_KEY_V1 = re.compile(
    rf"app=(?P<app>[^/]+)/date={_DATE}/(?P<dir>hour=(?P<hour>[0-9]{{2}})/region=(?P<region>[^/]+)/)"
    r"(?P<name>[^/]+\.parquet)\Z"
)


def hour_start_ns(timestamp_ns: int) -> int:
    """Start of the UTC hour holding ``timestamp_ns``."""
    return timestamp_ns - timestamp_ns % NS_PER_HOUR


def _utc(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // NS_PER_SECOND, UTC)


def hour_stamp(hour_ns: int) -> str:
    """``YYYYMMDDTHH`` of a UTC hour: what every v2 file name of that hour starts with."""
    return f"{_utc(hour_ns):%Y%m%dT%H}"


def app_prefix(app_segment: str) -> str:
    """Prefix of every object of one app segment (already encoded)."""
    return f"app={app_segment}/"


def day_prefix(app_segment: str, day_ns: int) -> str:
    """Prefix of one app segment's objects of the UTC day holding ``day_ns`` (both layouts)."""
    return f"{app_prefix(app_segment)}date={_utc(day_ns):%Y-%m-%d}/"


def hour_prefix(app_segment: str, hour_ns: int) -> str:
    """Prefix of one app segment's v2 files of the UTC hour starting at ``hour_ns`` (not a folder)."""
    return f"{day_prefix(app_segment, hour_ns)}{hour_stamp(hour_ns)}"


def day_stamp(day_ns: int) -> str:
    """``YYYYMMDD`` of a UTC day: what its day files' names start with."""
    return f"{_utc(day_ns):%Y%m%d}"


def day_file_prefix(app_segment: str, day_ns: int) -> str:
    """Prefix of one app segment's day files (roll-ups) of the UTC day holding ``day_ns`` (not a folder)."""
    return f"{day_prefix(app_segment, day_ns)}{day_stamp(day_ns)}{DAY_FILE_MARK}"


def hour_prefixes(app_segment: str, hour_ns: int, now_ns: int | None = None) -> list[str]:
    """Listing prefixes of one app segment's v2 files holding the UTC hour from ``hour_ns``: the hour's, and its day files'.

    The day files' prefix only once the day has ended (``now_ns``: the clock): a day is rolled up only
    after it ended plus a grace of an hour or more (which also covers clocks apart), so the day in
    progress costs no listing.
    """
    day_ns = hour_ns - hour_ns % NS_PER_DAY
    ended = day_ns + NS_PER_DAY <= (time.time_ns() if now_ns is None else now_ns)
    return [hour_prefix(app_segment, hour_ns), *([day_file_prefix(app_segment, day_ns)] if ended else [])]


def v1_hour_prefix(app_segment: str, hour_ns: int) -> str:
    """Folder of one app segment's v1 files of the UTC hour starting at ``hour_ns`` (every region)."""
    return f"{day_prefix(app_segment, hour_ns)}hour={_utc(hour_ns):%H}/"


def object_key(app_segment: str, hour_ns: int, name: str) -> str:
    """Key of one v2 archive file, relative to the archive prefix; ``name`` must start with the hour's stamp.

    A day file's name (``YYYYMMDD-d-...``) starts with its day's stamp instead; ``hour_ns`` is then the day's start.
    """
    if name.startswith(day_stamp(hour_ns) + DAY_FILE_MARK) and hour_ns % NS_PER_DAY == 0:
        return f"{day_prefix(app_segment, hour_ns)}{name}"
    if not name.startswith(hour_stamp(hour_ns)):
        raise ValueError(f"file name {name!r} does not start with its hour {hour_stamp(hour_ns)}")
    return f"{day_prefix(app_segment, hour_ns)}{name}"


def v1_object_key(app_segment: str, region_segment: str, hour_ns: int, name: str) -> str:
    """Key of a v1 archive file (old archives; tests build them to check they are still read)."""
    return f"{v1_hour_prefix(app_segment, hour_ns)}region={region_segment}/{name}"


def object_name(first_timestamp_ns: int, writer_id: str, sequence: int) -> str:
    """A live file name unique per writer: sortable first event time, writer id, sequence."""
    return f"{_utc(first_timestamp_ns):%Y%m%dT%H%M%S}Z-{writer_id}-{sequence:08d}{PARQUET_SUFFIX}"


_LIVE_NAME = re.compile(r"[0-9]{8}T[0-9]{6}Z-(?P<writer>[0-9a-z]+)-(?P<seq>[0-9]{8,})\.parquet\Z")


def live_name_parts(name: str) -> tuple[str, int] | None:
    """(writer id, sequence) of a live flush file's name (:func:`object_name`); None for other names."""
    match = _LIVE_NAME.match(name)
    return None if match is None else (match["writer"], int(match["seq"]))


def import_name(hour_ns: int, digest: str) -> str:
    """The name of one imported batch's file of one hour."""
    return f"{hour_stamp(hour_ns)}-i-{digest}{PARQUET_SUFFIX}"


class ObjectKey(NamedTuple):
    """A parsed archive key: decoded app, region (v1 keys only: a v2 file holds it as a column), hour, name.

    A day file's ``hour_ns`` is its day's start and its ``length_ns`` the day (every other file: an hour).
    """

    app: str
    region: str | None
    hour_ns: int
    name: str
    layout: int
    #: The key below ``app=<app>/date=<D>/``: the name (v2) or ``hour=HH/region=R/<name>`` (v1).
    relative_name: str
    #: The time the file's rows may lie in, from ``hour_ns``: an hour, or a day for a day file.
    length_ns: int = NS_PER_HOUR

    @property
    def hour(self) -> datetime:
        """The UTC hour as a datetime."""
        return _utc(self.hour_ns)


@functools.lru_cache(maxsize=1024)
def _day_start_ns(date: str) -> int:
    # Cached: strptime was a third of planning a day's 1,500 keys, and a listing holds few dates.
    return int(datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp()) * NS_PER_SECOND


def parse_key(key: str) -> ObjectKey | None:
    """Parse a key of either layout; None for anything else (an app segment that does not decode included)."""
    match = _KEY_V2.match(key)
    layout = 2
    if match is None:
        match = _KEY_V1.match(key)
        layout = 1
        if match is None:
            return None
    try:
        day_ns = _day_start_ns(match["date"])
        hour = 0 if layout == 2 and match["whole"] else int(match["hour"])
        if layout == 2:
            if match["day"] != match["date"].replace("-", ""):
                return None
            app, region, relative = decode_value(match["app"]), None, match["name"]
        else:
            app, region = decode_value_v1(match["app"]), decode_value_v1(match["region"])
            relative = match["dir"] + match["name"]
    except (ValueError, UnicodeDecodeError):
        return None
    if hour > 23:
        return None
    hour_ns = day_ns + hour * NS_PER_HOUR
    length_ns = NS_PER_DAY if layout == 2 and match["whole"] else NS_PER_HOUR
    return ObjectKey(app, region, hour_ns, match["name"], layout, relative, length_ns)
