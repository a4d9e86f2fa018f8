"""Reading an Avro object container file block by block, so blocks can be inflated on worker threads.

Sans-io: bytes in, raw blocks out; :func:`decode_block` inflates one block and decodes its records.
``fastavro.reader`` inflates every block on the calling thread; demux instead hands whole blocks to
its worker threads (zlib and Zstandard release the GIL), so reading an archive part is not a serial step.

Container layout (Avro 1.x spec): ``Obj\\x01``, a metadata map (``avro.schema``, ``avro.codec``), a
16-byte sync marker, then blocks of ``count:long, size:long, data[size], sync[16]``.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fastavro

from ._block_codecs import check_codec, decompress_block
from ._container import _read_long

__all__ = ["Block", "decode_block", "iter_blocks"]

_MAGIC = b"Obj\x01"


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint long at ``pos``: (value, next position); ValueError if the data ends first."""
    got = _read_long(buf, pos)
    if got is None:
        raise ValueError("truncated Avro file")
    return got


@dataclass(frozen=True)
class Block:
    count: int
    data: bytes  # as stored (compressed with ``codec``)
    codec: str
    schema: Any  # parsed writer schema


def iter_blocks(raw: bytes) -> Iterator[Block]:
    """The blocks of an Avro container file in ``raw``; raises ValueError if it is not one."""
    if raw[:4] != _MAGIC:
        raise ValueError("not an Avro object container file")
    pos = 4
    meta: dict[str, bytes] = {}
    while True:
        n, pos = _long(raw, pos)
        if n == 0:
            break
        if n < 0:
            n = -n
            _, pos = _long(raw, pos)  # byte size of the block of entries
        for _ in range(n):
            klen, pos = _long(raw, pos)
            key = raw[pos : pos + klen].decode()
            pos += klen
            vlen, pos = _long(raw, pos)
            meta[key] = raw[pos : pos + vlen]
            pos += vlen
    sync = raw[pos : pos + 16]
    pos += 16
    codec = meta.get("avro.codec", b"null").decode()
    check_codec(codec)
    schema = fastavro.parse_schema(json.loads(meta["avro.schema"]))
    while pos < len(raw):
        count, pos = _long(raw, pos)
        size, pos = _long(raw, pos)
        data = raw[pos : pos + size]
        pos += size
        if len(data) != size or raw[pos : pos + 16] != sync:
            raise ValueError("truncated or corrupt Avro block")
        pos += 16
        yield Block(count, data, codec, schema)


def decode_block(block: Block) -> list[dict[str, Any]]:
    """Inflate ``block`` and decode its records."""
    fo = io.BytesIO(decompress_block(block.codec, block.data))
    out = []
    for _ in range(block.count):
        rec = fastavro.schemaless_reader(fo, block.schema)
        if not isinstance(rec, dict):
            raise ValueError("not a file of chunk records")
        out.append(rec)
    return out
