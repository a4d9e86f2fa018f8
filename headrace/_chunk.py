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

This module is sans-io: bytes in, values out.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._names import check_component, check_stream
from .errors import InvalidInput

__all__ = [
    "BATCH_CONTENT_TYPE",
    "SINK_SCHEMA",
    "Chunk",
    "chunk_from_record",
    "chunk_to_record",
    "decode_batch",
    "encode_batch",
]

BATCH_CONTENT_TYPE = "application/x-headrace-chunks"
_MAGIC = b"HRCB"
_VERSION = 1
_HEAD = struct.Struct(">4sBI")
_U32 = struct.Struct(">I")
MAX_TAGS = 64

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
    """Raise :class:`InvalidInput` if the chunk's names, offsets, tags or size are not acceptable."""
    check_component("source", c.source)
    check_stream(c.stream)
    check_component("data_type", c.data_type)
    if c.seq_start < 0 or c.seq_end - c.seq_start != len(c.data):
        raise InvalidInput(
            "bad_offsets",
            f"seq_end - seq_start must equal the data length ({c.seq_start}..{c.seq_end}, {len(c.data)} bytes)",
        )
    if len(c.data) > max_chunk_bytes:
        raise InvalidInput("chunk_too_large", f"{len(c.data)} bytes > limit {max_chunk_bytes}")
    if len(c.tags) > MAX_TAGS or not all(
        isinstance(k, str) and isinstance(v, str) and "\x00" not in k + v for k, v in c.tags.items()
    ):
        raise InvalidInput("bad_tags", f"tags must be at most {MAX_TAGS} string pairs without NUL")


def encode_batch(chunks: Iterable[Chunk]) -> bytes:
    """Encode chunks into one request body."""
    items = list(chunks)
    out = [_HEAD.pack(_MAGIC, _VERSION, len(items))]
    for c in items:
        header = c.header_bytes()
        out += [_U32.pack(len(header)), header, _U32.pack(len(c.data)), c.data, _U32.pack(c.crc(header))]
    return b"".join(out)


def decode_batch(body: bytes, *, max_chunk_bytes: int = 16 << 20) -> list[Chunk]:
    """Decode and validate a request body; raise :class:`InvalidInput` naming the first problem."""
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
        if hlen > 1 << 20:
            raise InvalidInput("malformed", f"chunk {len(chunks)}: header of {hlen} bytes")
        header = bytes(take(hlen, "header"))
        (dlen,) = _U32.unpack(take(4, "data length"))
        if dlen > max_chunk_bytes:
            raise InvalidInput("chunk_too_large", f"chunk {len(chunks)}: {dlen} bytes > limit {max_chunk_bytes}")
        data = bytes(take(dlen, "data"))
        (crc,) = _U32.unpack(take(4, "crc"))
        if zlib.crc32(data, zlib.crc32(header)) != crc:
            raise InvalidInput("bad_crc", f"chunk {len(chunks)}: CRC mismatch")
        try:
            h = json.loads(header)
            c = Chunk(
                source=h["source"],
                stream=h["stream"],
                data_type=h["data_type"],
                seq_start=int(h["seq_start"]),
                seq_end=int(h["seq_end"]),
                data=data,
                tags=dict(h.get("tags") or {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput("malformed", f"chunk {len(chunks)}: bad header: {exc!r}") from exc
        validate_chunk(c, max_chunk_bytes)
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
