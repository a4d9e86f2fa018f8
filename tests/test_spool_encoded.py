"""Shipping from the spool's own encoding: the body joined from spooled chunks equals encode_batch.

The spool keeps each chunk as it stands in a batch; the shipper joins those bytes instead of encoding
the chunks again (no second CRC pass, no header re-encoding). The fast path must give byte-identical
bodies to the reference path for every chunk the spool can hold, and a damaged record must still be
caught (by the collector's CRC check) rather than shipped as if valid.
"""

from __future__ import annotations

import struct
import tempfile
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace._chunk import MAX_SEQ, Chunk, decode_batch, encode_batch, encode_chunk, join_batch
from headrace._spool import Spool
from headrace.errors import InvalidInput

_REC = struct.Struct(">II")  # the spool's record head (length, CRC-32), as documented in headrace._spool
_U32 = struct.Struct(">I")

#: names and tags the spool must carry as they are (it checks no naming rules): any UTF-8 text
_names = st.text(alphabet=st.characters(codec="utf-8"), min_size=0, max_size=30)


@st.composite
def chunks(draw: st.DrawFn) -> Chunk:
    data = draw(st.binary(max_size=3000))
    start = draw(st.integers(min_value=0, max_value=MAX_SEQ - len(data)))
    tags = draw(st.dictionaries(_names, _names, max_size=4))
    return Chunk(draw(_names), draw(_names), draw(_names), start, start + len(data), data, tags)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunks(), min_size=1, max_size=8), st.lists(st.binary(max_size=60), min_size=8, max_size=8))
def test_joined_spool_encoding_equals_encode_batch(items: list[Chunk], cursors: list[bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sp = Spool(Path(tmp), cap_bytes=1 << 30, segment_bytes=4096)
        for c, cur in zip(items, cursors, strict=False):
            sp.append(c, cur)
        sp.sync()
        got = sp.peek(max_chunks=100, max_bytes=1 << 30)
        assert [e.chunk for e in got] == items
        assert [bytes(e.encoded) for e in got] == [encode_chunk(c) for c in items]
        assert join_batch([e.encoded for e in got]) == encode_batch(items)
        sp.close()
        # the records written from pieces (writev) are the reference path's joined records, byte for byte
        want = b""
        for c, cur in zip(items, cursors, strict=False):
            payload = _U32.pack(len(cur)) + cur + encode_batch([c])
            want += _REC.pack(len(payload), zlib.crc32(payload)) + payload
        segments = sorted(Path(tmp).glob("*.sealed")) + sorted(Path(tmp).glob("*.open"))
        assert b"".join(p.read_bytes() for p in segments) == want


def test_edge_values_round_trip(tmp_path: Path) -> None:
    edge = [
        Chunk("", "", "", 0, 0, b""),
        Chunk("h", "s/\u00e9\U0001f600", "t", MAX_SEQ - 3, MAX_SEQ, b"a\n\x00", {"k\u2028": "v\"\\\x7f"}),
        Chunk("h", "s", "t", 5, 5 + 70000, bytes(range(256)) * 273 + b"\n" * 112, {}),
    ]
    sp = Spool(tmp_path, cap_bytes=1 << 30)
    for c in edge:
        sp.append(c, b"\xff" * 3)
    got = sp.peek(max_chunks=10, max_bytes=1 << 30)
    body = join_batch([e.encoded for e in got])
    assert body == encode_batch(edge)
    assert decode_batch(body, validate=False) == edge
    sp.close()


def test_a_damaged_record_is_not_shipped_as_valid(tmp_path: Path) -> None:
    """The chunk's CRC travels from the spool: damage between append and peek fails the receiver's check."""
    sp = Spool(tmp_path, cap_bytes=1 << 20)
    sp.append(Chunk("h", "s", "t", 0, 6, b"hello\n"), b"c")
    sp.sync()
    seg = next(tmp_path.glob("*.open"))
    raw = bytearray(seg.read_bytes())
    raw[raw.index(b"hello")] ^= 0x20  # "Hello": the record's own CRC is not checked on peek
    seg.write_bytes(bytes(raw))
    got = sp.peek()
    with pytest.raises(InvalidInput) as err:
        decode_batch(join_batch([e.encoded for e in got]))
    assert err.value.reason == "bad_crc"
    sp.close()
