"""Schema v2 of archive files: the columns, their types, and how they map to a Fly message.

A Fly log message is a JSON object (every field a string)::

    {"event": {"provider": "app"}, "fly": {"app": {"instance": "..", "name": ".."},
     "region": ".."}, "host": "..", "log": {"level": "info"}, "message": "..",
     "timestamp": "2022-09-27T20:34:37.252022967Z"}

The app is a partition value: it lives in the object key only (hive layout,
see :mod:`archiver.archive.layout`), never in the file; ``date`` too. The
region is a column. Everything the columns below do not hold exactly is kept
in ``extra`` (a JSON object text, null when empty) so the original message
can be rebuilt field for field.

Time: ``timestamp`` is microseconds (the type every engine reads as a
timestamp: Spark, Delta Lake and Iceberg have no nanoseconds) and
``timestamp_nanos`` the nanoseconds past that microsecond (0-999), so the
exact time is ``epoch_us(timestamp) * 1000 + timestamp_nanos``
(:mod:`archiver.archive.timestamps`). Rows are sorted by both.

Versions: schema v1 (layout v1, ``hour=``/``region=`` folders) had
``timestamp`` in nanoseconds, no ``timestamp_nanos`` and no ``region``
column (it was in the key). Readers still read v1 files, normalised on read
(the region from the key); compaction rewrites them as v2.

Malformed rows (see :mod:`archiver.codec.parse` for which payloads): ``timestamp``
is the time the archiver received the batch, ``message`` the payload as
text, ``region`` the partition's, the other columns null, and ``extra`` a JSON
object whose first key is :data:`MALFORMED_MARK` (``true``), so the flag is
found without parsing JSON; in DuckDB ``WHERE extra LIKE '{"_malformed":true%'``
(or ``json_extract(extra, '$._malformed')``). A regular row's ``extra`` never
holds that key: a message carrying it is itself archived as malformed.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "2"
#: Key in the Parquet key-value metadata carrying :data:`SCHEMA_VERSION`.
SCHEMA_VERSION_KEY = b"archiver.schema_version"

TIMESTAMP = "timestamp"
#: Nanoseconds past the microsecond of ``timestamp`` (0-999).
TIMESTAMP_NANOS = "timestamp_nanos"
#: The Fly region (``fly.region``, or the subject's); the partition value of v1 files.
REGION = "region"
INSTANCE = "instance"
HOST = "host"
PROVIDER = "provider"
#: The app's own level when ``message`` is a JSON object carrying one, else the Fly level.
LEVEL = "level"
#: ``log.level`` exactly as Fly sent it.
FLY_LEVEL = "fly_level"
MESSAGE = "message"
#: JSON object text with every field not held exactly by the other columns.
EXTRA = "extra"

#: Partition columns: in the key, not in the file (``hour``: v1 keys only).
APP = "app"
DATE = "date"
HOUR = "hour"

#: Marker in ``extra`` for a payload that was not a Fly JSON object; ``message`` holds it verbatim.
MALFORMED_MARK = "_malformed"
#: Marker in ``extra`` holding base64 of a malformed payload that was not valid UTF-8.
RAW_BASE64_MARK = "_raw_base64"
#: Marker in ``extra`` of a malformed row whose payload was cut at ``MAX_MESSAGE_BYTES``.
TRUNCATED_MARK = "_truncated"
#: Key in ``extra`` of a truncated row: the payload's size in bytes before the cut.
ORIGINAL_BYTES_MARK = "_original_bytes"

#: Why a row is malformed (the ``kind`` label of ``archiver_messages_malformed_total``):
#: nothing but whitespace; not JSON; not UTF-8; JSON but not an object; no usable timestamp
#: (absent, not a string, unparseable or outside the accepted window); a top-level
#: MALFORMED_MARK key; nested too deep to store; cut at ``MAX_MESSAGE_BYTES``.
MALFORMED_KINDS = (
    "empty", "not_json", "invalid_utf8", "not_object", "bad_timestamp", "reserved_key", "too_deep", "truncated",
)  # fmt: skip

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
NANOS_TYPE = pa.int16()
#: Schema v1's timestamp type (and the exact time readers work with).
NS_TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
#: Nanoseconds in one unit of an Arrow timestamp (statistics and scalars are raw values in their unit).
NS_PER_UNIT = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}

FILE_SCHEMA = pa.schema(
    [
        pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
        pa.field(TIMESTAMP_NANOS, NANOS_TYPE, nullable=False),
        pa.field(REGION, pa.string()),
        pa.field(INSTANCE, pa.string()),
        pa.field(HOST, pa.string()),
        pa.field(PROVIDER, pa.string()),
        pa.field(LEVEL, pa.string()),
        pa.field(FLY_LEVEL, pa.string()),
        pa.field(MESSAGE, pa.string()),
        pa.field(EXTRA, pa.string()),
    ],
    metadata={SCHEMA_VERSION_KEY: SCHEMA_VERSION.encode()},
)

#: Columns whose values repeat enough that dictionary encoding pays.
DICTIONARY_COLUMNS = (REGION, INSTANCE, HOST, PROVIDER, LEVEL, FLY_LEVEL)
#: The columns of a v1 file, in order.
V1_COLUMNS = (TIMESTAMP, INSTANCE, HOST, PROVIDER, LEVEL, FLY_LEVEL, MESSAGE, EXTRA)

#: Keys a JSON ``message`` may carry the app's own level under, in order of preference.
APP_LEVEL_KEYS = ("level", "severity", "lvl")
