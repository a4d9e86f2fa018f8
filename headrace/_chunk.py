"""The chunk: the unit of the log path, and its two encodings (the HTTP batch and the sink record).

A chunk is a contiguous byte range ``[seq_start, seq_end)`` of one stream, where offsets count bytes
since the agent first saw the stream. It always ends on a record boundary. ``(source, stream,
seq_end)`` identifies it, so a re-sent chunk is recognisable.

Batch wire format (``POST /v1/chunks``, ``Content-Type: application/x-headrace-chunks``)::

    b"HRCB" | version:u8 = 1 | count:u32
    count × ( header_len:u32 | header: JSON, UTF-8 | data_len:u32 | data | crc:u32 )

All integers big-endian. The header is ``{"source", "stream", "data_type", "seq_start", "seq_end",
"tags"}``; ``crc`` is CRC-32 (zlib) of header bytes followed by data. Decoding is all-or-nothing: a
batch with any bad chunk is refused whole, so a collector never writes part of a bad request.
Headers go through one strict parser (:func:`parse_chunk`): standard JSON only, exact JSON types (no
coercion), exactly the known keys, offsets in the Avro ``long`` range they are stored with, names
matched whole; the rules are listed in docs/collector.md.

This module is sans-io: bytes in, values out.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ._names import check_component, check_stream
from .errors import InvalidInput

__all__ = [
    "BATCH_CONTENT_TYPE",
    "SINK_SCHEMA",
    "Chunk",
    "chunk_from_record",
    "chunk_parts",
    "chunk_to_record",
    "decode_batch",
    "encode_batch",
    "encode_chunk",
    "join_batch",
    "parse_chunk",
    "parse_header",
    "validate_chunk",
]

BATCH_CONTENT_TYPE = "application/x-headrace-chunks"
_MAGIC = b"HRCB"
_VERSION = 1
_HEAD = struct.Struct(">4sBI")
_U32 = struct.Struct(">I")
MAX_TAGS = 64
MAX_TAG_NAME = 128
MAX_TAG_VALUE = 1024
MAX_HEADER_BYTES = 256 << 10
#: The largest offset: offsets are stored as Avro ``long``.
MAX_SEQ = (1 << 63) - 1
_TAG_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,128}")  # MAX_TAG_NAME
_REQUIRED = frozenset({"source", "stream", "data_type", "seq_start", "seq_end"})

#: Avro schema of one sink-file (and archive-file) record.
SINK_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "Chunk",
    "namespace": "headrace",
    "fields": [
        {"name": "source", "type": "string"},
        {"name": "stream", "type": "string"},
        {"name": "data_type", "type": "string"},
        {"name": "seq_start", "type": "long"},
        {"name": "seq_end", "type": "long"},
        {"name": "tags", "type": {"type": "map", "values": "string"}},
        {"name": "data", "type": "bytes"},
        {"name": "crc", "type": "long"},
        {"name": "received_ms", "type": "long"},  # collector clock, ms since the epoch (UTC)
    ],
}


@dataclass(slots=True)
class Chunk:
    """One contiguous, record-aligned byte range of one stream."""

    source: str
    stream: str
    data_type: str
    seq_start: int
    seq_end: int
    data: bytes
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int]:
        """The identity that makes a re-sent chunk recognisable."""
        return (self.source, self.stream, self.seq_end)

    def header_bytes(self) -> bytes:
        return json.dumps(
            {
                "source": self.source,
                "stream": self.stream,
                "data_type": self.data_type,
                "seq_start": self.seq_start,
                "seq_end": self.seq_end,
                "tags": self.tags,
            },
            separators=(",", ":"),
        ).encode()

    def crc(self, header: bytes | None = None) -> int:
        return zlib.crc32(self.data, zlib.crc32(self.header_bytes() if header is None else header))


def validate_chunk(c: Chunk, max_chunk_bytes: int) -> None:
    """Raise :class:`InvalidInput` if the chunk's names, offsets, tags or size are not acceptable.

    Every value is checked against what it is stored as (``SINK_SCHEMA``): offsets are Avro longs
    (``0 <= seq_start <= seq_end <= 2**63 - 1``), strings must be encodable as UTF-8, names are
    matched whole (a trailing newline is refused).
    """
    check_component("source", c.source)
    check_stream(c.stream)
    check_component("data_type", c.data_type)
    for what, v in (("seq_start", c.seq_start), ("seq_end", c.seq_end)):
        if type(v) is not int or not 0 <= v <= MAX_SEQ:
            raise InvalidInput("bad_offsets", f"{what} must be an integer in 0..2**63-1, not {v!r:.40}")
    if c.seq_end - c.seq_start != len(c.data):
        raise InvalidInput(
            "bad_offsets",
            f"seq_end - seq_start must equal the data length ({c.seq_start}..{c.seq_end}, {len(c.data)} bytes)",
        )
    if len(c.data) > max_chunk_bytes:
        raise InvalidInput("chunk_too_large", f"{len(c.data)} bytes > limit {max_chunk_bytes}")
    check_tags(c.tags)


def check_tags(tags: object) -> dict[str, str]:
    """Return ``tags`` if it is a dict of at most ``MAX_TAGS`` acceptable name → value pairs, else raise.

    A tag name is 1..``MAX_TAG_NAME`` characters without control characters; a value is at most
    ``MAX_TAG_VALUE`` characters without NUL; both must be encodable as UTF-8 (no lone surrogates).
    """
    if type(tags) is not dict:
        raise InvalidInput("bad_tags", f"tags must be a JSON object of strings, not {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise InvalidInput("bad_tags", f"{len(tags)} tags > limit {MAX_TAGS}")
    for k, v in tags.items():
        if type(k) is not str or not _TAG_NAME.fullmatch(k) or not _utf8(k):
            raise InvalidInput(
                "bad_tags",
                f"tag name {k!r:.80} is not allowed: 1..{MAX_TAG_NAME} characters, no control characters",
            )
        if type(v) is not str or len(v) > MAX_TAG_VALUE or "\x00" in v or not _utf8(v):
            raise InvalidInput(
                "bad_tags", f"tag {k!r} value must be a string of at most {MAX_TAG_VALUE} characters without NUL"
            )
    return tags


def _utf8(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key appears twice in one object")
    return out


def parse_header(header: bytes, index: int = 0) -> dict[str, Any]:
    """The header of one chunk as a dict with exactly the fields of :class:`Chunk` (but ``data``).

    Strict: standard JSON only (no ``NaN``/``Infinity``, no duplicate keys), a JSON object with
    exactly the keys ``source``, ``stream``, ``data_type``, ``seq_start``, ``seq_end`` and optionally
    ``tags``; strings must be JSON strings and offsets JSON integers (``true``, ``1.0``, ``"1"``
    are refused, never converted). Raises :class:`InvalidInput` (``malformed`` for the shape,
    ``bad_offsets``/``bad_tags`` for those fields' types).
    """
    try:
        h = json.loads(header, parse_constant=_no_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise InvalidInput("malformed", f"chunk {index}: header is not JSON: {exc!s:.200}") from exc
    if type(h) is not dict:
        raise InvalidInput("malformed", f"chunk {index}: header must be a JSON object")
    missing = _REQUIRED - h.keys()
    unknown = h.keys() - _REQUIRED - {"tags"}
    if missing or unknown:
        raise InvalidInput(
            "malformed",
            f"chunk {index}: header fields missing {sorted(missing)} / unknown {sorted(unknown)[:5]!r:.200}",
        )
    for name in ("source", "stream", "data_type"):
        if type(h[name]) is not str:
            raise InvalidInput(f"bad_{name}", f"chunk {index}: {name} must be a JSON string")
    for name in ("seq_start", "seq_end"):
        v = h[name]
        if type(v) is not int:
            raise InvalidInput("bad_offsets", f"chunk {index}: {name} must be a JSON integer, not {type(v).__name__}")
    h.setdefault("tags", {})
    if type(h["tags"]) is not dict:
        raise InvalidInput("bad_tags", f"chunk {index}: tags must be a JSON object")
    return h


def parse_chunk(header: bytes, data: bytes, max_chunk_bytes: int, index: int = 0) -> Chunk:
    """Parse and validate one chunk (the one strict parser of the log path's chunk headers)."""
    h = parse_header(header, index)
    c = Chunk(h["source"], h["stream"], h["data_type"], h["seq_start"], h["seq_end"], data, h["tags"])
    try:
        validate_chunk(c, max_chunk_bytes)
    except InvalidInput as exc:
        raise InvalidInput(exc.reason, f"chunk {index}: {exc.detail}") from exc
    return c


def chunk_parts(c: Chunk) -> list[bytes]:
    """The pieces of :func:`encode_chunk` (``header_len | header | data_len | data | crc``), unjoined,
    for a writer that writes them with one ``writev`` (the data is not copied)."""
    header = c.header_bytes()
    return [_U32.pack(len(header)), header, _U32.pack(len(c.data)), c.data, _U32.pack(c.crc(header))]


def encode_chunk(c: Chunk) -> bytes:
    """One chunk as it stands in a batch (``header_len | header | data_len | data | crc``)."""
    return b"".join(chunk_parts(c))


def join_batch(encoded: Sequence[bytes | memoryview]) -> bytes:
    """A request body of chunks already encoded by :func:`encode_chunk` (the spool keeps them so:
    shipping then neither re-encodes headers nor computes CRCs again). Equal to :func:`encode_batch`
    of the same chunks."""
    return b"".join([_HEAD.pack(_MAGIC, _VERSION, len(encoded)), *encoded])


def encode_batch(chunks: Iterable[Chunk]) -> bytes:
    """Encode chunks into one request body."""
    return join_batch([encode_chunk(c) for c in chunks])


def decode_batch(body: bytes | bytearray, *, max_chunk_bytes: int = 16 << 20, validate: bool = True) -> list[Chunk]:
    """Decode and validate a request body; raise :class:`InvalidInput` naming the first problem.

    Every header goes through :func:`parse_chunk`. With ``validate=False`` (the spool reading back its
    own records) only the framing, the CRC and the header's JSON shape and types are checked, so a
    record written under older, looser rules is handed to the shipper (and set aside when refused
    upstream) instead of being cut from the spool with everything after it.
    """
    view = memoryview(body)
    if len(view) < _HEAD.size:
        raise InvalidInput("malformed", "body shorter than the batch header")
    magic, version, count = _HEAD.unpack_from(view, 0)
    if magic != _MAGIC:
        raise InvalidInput("malformed", "not a headrace chunk batch (bad magic)")
    if version != _VERSION:
        raise InvalidInput("unsupported_version", f"batch version {version}; this collector reads {_VERSION}")
    pos = _HEAD.size
    chunks: list[Chunk] = []

    def take(n: int, what: str) -> memoryview:
        nonlocal pos
        if pos + n > len(view):
            raise InvalidInput("malformed", f"chunk {len(chunks)}: body ends inside the {what}")
        part = view[pos : pos + n]
        pos += n
        return part

    for _ in range(count):
        (hlen,) = _U32.unpack(take(4, "header length"))
        if hlen > MAX_HEADER_BYTES:
            raise InvalidInput("malformed", f"chunk {len(chunks)}: header of {hlen} bytes > {MAX_HEADER_BYTES}")
        header = bytes(take(hlen, "header"))
        (dlen,) = _U32.unpack(take(4, "data length"))
        if dlen > max_chunk_bytes:
            raise InvalidInput("chunk_too_large", f"chunk {len(chunks)}: {dlen} bytes > limit {max_chunk_bytes}")
        data = bytes(take(dlen, "data"))
        (crc,) = _U32.unpack(take(4, "crc"))
        if zlib.crc32(data, zlib.crc32(header)) != crc:
            raise InvalidInput("bad_crc", f"chunk {len(chunks)}: CRC mismatch")
        if validate:
            c = parse_chunk(header, data, max_chunk_bytes, len(chunks))
        else:
            h = parse_header(header, len(chunks))
            c = Chunk(h["source"], h["stream"], h["data_type"], h["seq_start"], h["seq_end"], data, h["tags"])
        chunks.append(c)
    if pos != len(view):
        raise InvalidInput("malformed", f"{len(view) - pos} trailing bytes after {count} chunks")
    return chunks


def chunk_to_record(c: Chunk, received_ms: int) -> dict[str, Any]:
    """The sink-file record of a chunk."""
    return {
        "source": c.source,
        "stream": c.stream,
        "data_type": c.data_type,
        "seq_start": c.seq_start,
        "seq_end": c.seq_end,
        "tags": c.tags,
        "data": c.data,
        "crc": zlib.crc32(c.data),
        "received_ms": received_ms,
    }


def chunk_from_record(r: Mapping[str, Any]) -> Chunk:
    """The chunk of a sink-file or archive record (``crc`` is checked by the reader, not here)."""
    return Chunk(
        source=r["source"],
        stream=r["stream"],
        data_type=r["data_type"],
        seq_start=r["seq_start"],
        seq_end=r["seq_end"],
        data=r["data"],
        tags=dict(r["tags"]),
    )
