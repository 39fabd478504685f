"""Schema v1 of archive files: the columns, their types, and how they map to a Fly message.

A Fly log message is a JSON object (every field a string)::

    {"event": {"provider": "app"}, "fly": {"app": {"instance": "..", "name": ".."},
     "region": ".."}, "host": "..", "log": {"level": "info"}, "message": "..",
     "timestamp": "2022-09-27T20:34:37.252022967Z"}

The app and region are partition values: they live in the object key only
(hive layout, see :mod:`archiver.archive.layout`), never in the file. Everything the
columns below do not hold exactly is kept in ``extra`` (a JSON object text,
null when empty) so the original message can be rebuilt field for field.

Malformed rows (see :mod:`archiver.codec.parse` for which payloads): ``timestamp``
is the time the archiver received the batch, ``message`` the payload as
text, the other columns null, and ``extra`` a JSON object whose first key is
:data:`MALFORMED_MARK` (``true``), so the flag is found without parsing JSON;
in DuckDB ``WHERE extra LIKE '{"_malformed":true%'`` (or
``json_extract(extra, '$._malformed')``). A regular row's ``extra`` never
holds that key: a message carrying it is itself archived as malformed.
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
