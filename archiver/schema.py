"""Schema v1 of archive files: the columns, their types, and how they map to a Fly message.

A Fly log message is a JSON object (every field a string)::

    {"event": {"provider": "app"}, "fly": {"app": {"instance": "..", "name": ".."},
     "region": ".."}, "host": "..", "log": {"level": "info"}, "message": "..",
     "timestamp": "2022-09-27T20:34:37.252022967Z"}

The app and region are partition values: they live in the object key only
(hive layout, see :mod:`archiver.layout`), never in the file. Everything the
columns below do not hold exactly is kept in ``extra`` (a JSON object text,
null when empty) so the original message can be rebuilt field for field.
"""

from __future__ import annotations

import pyarrow as pa

SCHEMA_VERSION = "1"
#: Key in the Parquet key-value metadata carrying :data:`SCHEMA_VERSION`.
SCHEMA_VERSION_KEY = b"archiver.schema_version"

TIMESTAMP = "timestamp"
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

#: Partition columns: in the key, not in the file.
APP = "app"
REGION = "region"
DATE = "date"
HOUR = "hour"

#: Marker in ``extra`` for a payload that was not a Fly JSON object; ``message`` holds it verbatim.
MALFORMED_MARK = "_malformed"
#: Marker in ``extra`` holding base64 of a malformed payload that was not valid UTF-8.
RAW_BASE64_MARK = "_raw_base64"

TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")

FILE_SCHEMA = pa.schema(
    [
        pa.field(TIMESTAMP, TIMESTAMP_TYPE, nullable=False),
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
DICTIONARY_COLUMNS = (INSTANCE, HOST, PROVIDER, LEVEL, FLY_LEVEL)

#: Keys a JSON ``message`` may carry the app's own level under, in order of preference.
APP_LEVEL_KEYS = ("level", "severity", "lvl")
