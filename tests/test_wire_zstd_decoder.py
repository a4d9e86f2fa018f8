"""The one-call zstd decoder (headrace._wire_zstd) against the streaming one it replaced
(tests/wire_zstd_reference.py), on generated bodies: valid frames, and frames cut, flipped, followed
by more bytes, without a declared size, or declaring more than the limit, fed in random pieces."""

from __future__ import annotations

import zstandard
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from wire_zstd_reference import BoundedZstdDecoder as Reference

from headrace._wire_zstd import BoundedZstdDecoder
from headrace.errors import InvalidInput

LIMIT = 1 << 16
EMPTY = zstandard.ZstdCompressor().compress(b"")
SKIPPABLE = b"\x50\x2a\x4d\x18\x04\x00\x00\x00abcd"


def one_whole_frame(body: bytes) -> bool:
    """Whether ``body`` is exactly one complete zstd frame (libzstd's streaming API as the judge)."""
    dobj = zstandard.ZstdDecompressor().decompressobj()
    try:
        dobj.decompress(body)
    except zstandard.ZstdError:
        return False
    return bool(dobj.eof) and not dobj.unused_data


def run(cls: type, body: bytes, cuts: list[int], limit: int = LIMIT) -> bytes | str:
    """The decoded body, or the refusal's reason."""
    dec = cls(limit)
    try:
        pos = 0
        for cut in sorted(c % (len(body) + 1) for c in cuts):
            dec.feed(body[pos:cut])
            pos = max(pos, cut)
        dec.feed(body[pos:])
        return bytes(dec.finish())
    except InvalidInput as exc:
        return exc.reason


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, bool]:
    """(a body, whether it is not exactly one whole frame: something follows the frame, or it is cut)."""
    data = draw(st.one_of(st.binary(max_size=3000), st.just(b""), st.binary(max_size=40).map(lambda b: b * 200)))
    level = draw(st.integers(1, 5))
    frame = zstandard.ZstdCompressor(level=level, write_checksum=draw(st.booleans())).compress(data)
    if draw(st.integers(0, 9)) == 0:  # a streamed frame: no content size in its header
        obj = zstandard.ZstdCompressor(level=level).compressobj()
        frame = obj.compress(data) + obj.flush()
    mutation = draw(st.sampled_from(["none", "cut", "flip", "junk", "frame", "empty", "skippable", "head"]))
    trailing = False
    if mutation == "cut" and frame:
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
        trailing = True
    elif mutation == "flip" and frame:
        i = draw(st.integers(0, len(frame) - 1))
        frame = frame[:i] + bytes([frame[i] ^ draw(st.integers(1, 255))]) + frame[i + 1 :]
    elif mutation == "junk":
        frame += draw(st.binary(min_size=1, max_size=20))
        trailing = True
    elif mutation == "frame":
        frame += zstandard.ZstdCompressor().compress(draw(st.binary(max_size=100)))
        trailing = True
    elif mutation == "empty":
        frame += EMPTY
        trailing = True
    elif mutation == "skippable":
        frame += SKIPPABLE
        trailing = True
    elif mutation == "head":
        frame = draw(st.binary(max_size=30))
    return frame, trailing


@settings(max_examples=400, deadline=None)
@given(bodies(), st.lists(st.integers(0, 5000), max_size=6), st.sampled_from([LIMIT, 1000, 0]))
@example((EMPTY, False), [], LIMIT)
@example((EMPTY + EMPTY, True), [], LIMIT)
@example((zstandard.ZstdCompressor().compress(b"x" * 500) + SKIPPABLE, True), [3], LIMIT)
@example((zstandard.ZstdCompressor().compress(bytes(2000)), False), [], 1000)
@example((b"", False), [], LIMIT)
@example((b"(\xb5/\xfd \x00\x00\x00\x00", True), [], LIMIT)
@example((zstandard.ZstdCompressor(write_checksum=True).compress(bytes(13))[:-4], True), [], LIMIT)
def test_one_call_decoder_equals_the_streaming_one(body: tuple[bytes, bool], cuts: list[int], limit: int) -> None:
    raw, trailing = body
    new, ref = run(BoundedZstdDecoder, raw, cuts, limit), run(Reference, raw, cuts, limit)
    event("accepted" if isinstance(new, bytes) else f"refused {new}")
    if isinstance(new, bytes):
        assert new == ref  # whatever the new one accepts, the old one accepted, with the same bytes
        assert len(new) <= limit and one_whole_frame(raw)
    elif isinstance(ref, bytes):
        # The differences: the new decoder enforces "nothing may follow the frame" also for an
        # empty or skippable frame after it, and "a cut frame is refused" also for a frame whose
        # output was all there but whose end is missing (its last block or checksum): the
        # streaming one let both through.
        assert not one_whole_frame(raw) and new == "bad_encoding", (new, raw, trailing)
    else:
        assert new == ref  # both refuse, for the same reason (body_too_large or bad_encoding)


def test_a_frame_lying_about_its_size_is_refused_without_passing_it() -> None:
    data = bytes(range(256)) * 40
    frame = bytearray(zstandard.ZstdCompressor(level=3).compress(data))
    params = zstandard.get_frame_parameters(bytes(frame))
    assert params.content_size == len(data)
    # The content size field is the last 2 bytes of this header (single segment, 10240 < 65536+256).
    header = zstandard.frame_header_size(bytes(frame))
    frame[header - 2 : header] = (1000 - 256).to_bytes(2, "little")  # declares 1000 bytes
    assert zstandard.get_frame_parameters(bytes(frame)).content_size == 1000
    assert run(BoundedZstdDecoder, bytes(frame), []) == run(Reference, bytes(frame), []) == "bad_encoding"
