"""headrace relay: change sources, the event model and its wire format, Avro codec, ring buffer, HTTP relay.

Data flow: ``sources`` (committed windows of row changes) → ``_codec`` (encode once) → ``_buffer``
(bounded ring of whole windows, indexed by SCN) → ``_serve`` (HTTP long-poll). ``client`` is the
subscriber library.
"""

from ._buffer import RingBuffer
from ._codec import Codecs, RowCodec
from ._config import PostgresSourceConfig, RelayConfig
from ._event import (
    EVENTS_CONTENT_TYPE,
    Event,
    EventHeader,
    Op,
    decode_event,
    decode_key,
    encode_event,
    encode_key,
    iter_frames,
    key_partition,
    split_windows,
)
from ._filter import Filter, parse_filter
from ._schema import (
    MARKER_PROP,
    UNCHANGED_MARKER,
    UNREPRESENTABLE_MARKER,
    Column,
    ColumnType,
    SchemaRegistry,
    SchemaVersion,
    TableMeta,
    avro_schema,
    column_type_from_sqlalchemy,
    marker_fields,
    schema_fingerprint,
    source_listing,
    table_meta_from_sqlalchemy,
)
from ._values import JSON_NULL, Interval, JsonNull
from .sources import ChangeSource, ChangeWindow, RowChange, make_source

__all__ = [
    "EVENTS_CONTENT_TYPE",
    "JSON_NULL",
    "MARKER_PROP",
    "UNCHANGED_MARKER",
    "UNREPRESENTABLE_MARKER",
    "ChangeSource",
    "ChangeWindow",
    "Codecs",
    "Column",
    "ColumnType",
    "Event",
    "EventHeader",
    "Filter",
    "Interval",
    "JsonNull",
    "Op",
    "PostgresSourceConfig",
    "RelayConfig",
    "RingBuffer",
    "RowChange",
    "RowCodec",
    "SchemaRegistry",
    "SchemaVersion",
    "TableMeta",
    "avro_schema",
    "column_type_from_sqlalchemy",
    "decode_event",
    "decode_key",
    "encode_event",
    "encode_key",
    "iter_frames",
    "key_partition",
    "make_source",
    "marker_fields",
    "parse_filter",
    "schema_fingerprint",
    "source_listing",
    "split_windows",
    "table_meta_from_sqlalchemy",
]
