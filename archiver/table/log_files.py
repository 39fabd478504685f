"""The objects of ``_delta_log/`` as the read-only reader understands them: names, checkpoints, commits.

Pure code (bytes in, live files out); :mod:`archiver.table.log` does the I/O. What is read:

* object names: ``<v:020>.json`` (a commit), ``<v:020>.checkpoint.parquet`` (a classic
  single-file checkpoint, what delta-rs writes) and ``<v:020>.checkpoint.<i:010>.<n:010>.parquet``
  (the parts of a multi-part checkpoint). Every other name (``.crc``, ``.compacted.json``,
  ``_commits/``, V2 checkpoints ``<v>.checkpoint.<uuid>.*``, temporary files) is ignored, as Delta
  readers do; a V2 checkpoint named by ``_last_checkpoint`` fails clearly instead;
* from a checkpoint, only the columns ``add.path``, ``add.size``, ``add.partitionValues`` (and the
  one-row ``protocol`` and ``metaData.partitionColumns``): the stats strings, the bulk of a
  checkpoint, are never decoded;
* from a commit, its ``add``/``remove``/``protocol``/``metaData`` actions; others are skipped.

Checks, each a :class:`~archiver.errors.TableError` naming the object: a commit line that is
not a JSON object, an action missing its fields, a path that is absolute, not UTF-8 once
percent-decoded, or not a valid archive key (no way out of the archive), a checkpoint that is
not Parquet with those columns, a protocol needing reader features we do not implement
(deletion vectors, column mapping, V2 checkpoints), and partition columns other than
``app``/``date`` (a foreign table).

Paths are stored percent-encoded (delta-rs encodes the key once); each is decoded exactly once,
and files are matched by their decoded key, so two spellings of one key are one file.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterator
from typing import Any
from urllib.parse import unquote

import orjson

from archiver.errors import StorageError, TableError
from archiver.storage.keys import validate_key
from archiver.table.files import LiveFile
from archiver.table.schema import LOG_PREFIX, PARTITION_COLUMNS

COMMIT = "commit"
CHECKPOINT = "checkpoint"
CHECKPOINT_PART = "checkpoint_part"

_NAME = re.compile(r"(\d{20})\.(?:(json)|checkpoint\.parquet|checkpoint\.(\d{10})\.(\d{10})\.parquet)")
#: Reader features whose tables this reader still reads right (they change nothing it reads).
SUPPORTED_READER_FEATURES = frozenset({"timestampNtz", "vacuumProtocolCheck"})


class LogName:
    """A recognised ``_delta_log/`` object name: kind, version, and for a checkpoint part its index and count."""

    __slots__ = ("kind", "part", "parts", "version")

    def __init__(self, kind: str, version: int, part: int = 1, parts: int = 1) -> None:
        self.kind, self.version, self.part, self.parts = kind, version, part, parts


def parse_log_name(name: str) -> LogName | None:
    """The object's meaning from its name within ``_delta_log/`` (None: not one this reader uses)."""
    m = _NAME.fullmatch(name)
    if m is None:
        return None
    version = int(m.group(1))
    if m.group(2):
        return LogName(COMMIT, version)
    if m.group(3):
        return LogName(CHECKPOINT_PART, version, int(m.group(3)), int(m.group(4)))
    return LogName(CHECKPOINT, version)


def commit_key(version: int) -> str:
    """The key of commit ``version`` under the archive root."""
    return f"{LOG_PREFIX}{version:020d}.json"


def parse_last_checkpoint(key: str, data: bytes) -> tuple[int, int]:
    """(version, number of parts) from ``_last_checkpoint``; TableError if damaged or a V2 checkpoint."""
    try:
        doc = orjson.loads(data)
        version, parts = doc["version"], doc.get("parts") or 1
    except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise TableError(f"damaged Delta log object {key}: not a _last_checkpoint document ({exc})") from None
    if "v2Checkpoint" in doc:
        raise TableError(f"{key} names a V2 checkpoint, which archiver does not read")
    if not isinstance(version, int) or not isinstance(parts, int) or version < 0 or parts < 1:
        raise TableError(f"damaged Delta log object {key}: bad version or parts")
    return version, parts


def check_protocol(key: str, protocol: dict[str, Any]) -> None:
    """TableError unless this reader reads the table right (no deletion vectors, column mapping, V2 checkpoints)."""
    version = protocol.get("minReaderVersion")
    features = set(protocol.get("readerFeatures") or ())
    if version == 1 or (version == 3 and features <= SUPPORTED_READER_FEATURES):
        return
    needs = ", ".join(sorted(features - SUPPORTED_READER_FEATURES)) or f"reader version {version}"
    raise TableError(
        f"the table needs Delta reader features archiver does not implement ({needs}); set in {key}"
    )


def check_partition_columns(key: str, columns: Any) -> None:
    """TableError unless the table is partitioned by ``app`` and ``date`` (else it is not an archive)."""
    if list(columns or ()) != list(PARTITION_COLUMNS):
        raise TableError(f"not an archiver table: partition columns {columns!r} in {key}, expected app, date")


def decode_path(key: str, raw: Any) -> str:
    """The archive key of a log ``path`` (percent-decoded once, validated); TableError naming ``key`` if not."""
    if not isinstance(raw, str) or "://" in raw or raw.startswith("/"):
        raise TableError(f"damaged Delta log object {key}: path {raw!r} is not relative to the table")
    try:
        return validate_key(unquote(raw, errors="strict"))
    except (UnicodeDecodeError, StorageError):
        raise TableError(f"damaged Delta log object {key}: path {raw!r} is not a valid archive key") from None


class Filter:
    """Which partitions the caller wants (None: all)."""

    __slots__ = ("apps", "dates")

    def __init__(self, apps: Collection[str] | None, dates: Collection[str] | None) -> None:
        self.apps = None if apps is None else frozenset(apps)
        self.dates = None if dates is None else frozenset(dates)

    def wants(self, app: str, date: str) -> bool:
        """Whether a file of this partition is kept."""
        return (self.apps is None or app in self.apps) and (self.dates is None or date in self.dates)


def read_checkpoint(key: str, data: bytes, wanted: Filter) -> dict[str, LiveFile]:
    """Live files of one checkpoint (part) object, by key, restricted to ``wanted``; protocol and metadata checked."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    columns = ["add.path", "add.size", "add.partitionValues", "protocol", "metaData.partitionColumns"]
    try:
        table = pq.ParquetFile(io.BytesIO(data)).read(columns=columns)
        add = table.column("add").combine_chunks()
        path = pc.struct_field(add, "path")
        values = pc.struct_field(add, "partitionValues")
        app = pc.fill_null(pc.map_lookup(values, "app", "first"), "")
        date = pc.map_lookup(values, "date", "first")
        mask = pc.is_valid(path)
        if wanted.apps is not None:
            mask = pc.and_(mask, pc.is_in(app, value_set=pa.array(sorted(wanted.apps), pa.string())))
        if wanted.dates is not None:
            mask = pc.and_(mask, pc.is_in(date, value_set=pa.array(sorted(wanted.dates), pa.string())))
        rows = zip(
            *(col.filter(mask).to_pylist() for col in (path, pc.struct_field(add, "size"), app, date)),
            strict=True,
        )
        protocols = [p for p in table.column("protocol").to_pylist() if p is not None]
        metadata = [m for m in table.column("metaData").to_pylist() if m is not None]
    except (pa.ArrowException, KeyError, ValueError) as exc:
        raise TableError(f"damaged Delta log object {key}: not a readable checkpoint ({exc})") from None
    for protocol in protocols:
        check_protocol(key, protocol)
    for meta in metadata:
        check_partition_columns(key, meta["partitionColumns"])
    live = {}
    for raw, size, app_value, date_value in rows:
        if size is None or date_value is None:
            raise TableError(f"damaged Delta log object {key}: an add of {raw!r} has no size or date")
        file = LiveFile(decode_path(key, raw), size, app_value, date_value)
        live[file.key] = file
    return live


def _add(key: str, add: Any, wanted: Filter) -> LiveFile | None:
    """The LiveFile of an ``add`` action (None when filtered out); TableError if malformed."""
    try:
        raw, size, values = add["path"], add["size"], add["partitionValues"]
        app, date = values.get("app") or "", values["date"]
    except (TypeError, KeyError, AttributeError):
        raise TableError(
            f"damaged Delta log object {key}: an add action lacks path, size or partitionValues"
        ) from None
    if not isinstance(size, int) or not isinstance(app, str) or not isinstance(date, str):
        raise TableError(
            f"damaged Delta log object {key}: an add of {raw!r} has a bad size or partition value"
        )
    if add.get("deletionVector"):
        raise TableError(f"the table uses deletion vectors ({key}), which archiver does not read")
    if not wanted.wants(app, date):
        return None  # not decoded: a reader of other partitions need not pay for (or judge) this path
    return LiveFile(decode_path(key, raw), size, app, date)


def apply_commit(key: str, data: bytes, live: dict[str, LiveFile], wanted: Filter) -> None:
    """Replay one commit object onto ``live`` (adds kept when wanted, removes honoured); TableError if damaged."""
    for kind, value in _actions(key, data):
        if kind == "add":
            file = _add(key, value, wanted)
            if file is not None:
                live[file.key] = file
        else:
            live.pop(value, None)


def _actions(key: str, data: bytes) -> Iterator[tuple[str, Any]]:
    """("add", the add action) and ("remove", the decoded key) of a commit, protocol and metadata checked."""
    actions = 0
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = orjson.loads(line)
        except orjson.JSONDecodeError:
            raise TableError(f"damaged Delta log object {key}: line {number} is not JSON") from None
        if not isinstance(action, dict):
            raise TableError(f"damaged Delta log object {key}: line {number} is not an action object")
        actions += 1
        if (add := action.get("add")) is not None:
            yield "add", add
        elif (remove := action.get("remove")) is not None:
            if not isinstance(remove, dict):
                raise TableError(f"damaged Delta log object {key}: line {number} has a bad remove action")
            yield "remove", decode_path(key, remove.get("path"))
        elif (protocol := action.get("protocol")) is not None:
            check_protocol(key, protocol if isinstance(protocol, dict) else {})
        elif (meta := action.get("metaData")) is not None:
            check_partition_columns(key, meta.get("partitionColumns") if isinstance(meta, dict) else None)
    if actions == 0:
        raise TableError(f"damaged Delta log object {key}: no actions")
