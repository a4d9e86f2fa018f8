"""A seeding page's frames (``read_frames``) are byte for byte the relay's ``encode_event`` of each row (sans-io)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace.bootstrap._apply import read_frames
from headrace.relay import Event, Op, decode_event, encode_event

_fp = st.binary(min_size=8, max_size=8).map(bytes.hex)


@given(
    st.integers(0, (1 << 64) - 1),
    st.text(min_size=1, max_size=30),
    st.lists(st.tuples(_fp, st.binary(max_size=40), st.one_of(st.none(), st.binary(max_size=200))), max_size=20),
)
def test_read_frames_are_encode_event(scn: int, source: str, rows: list[tuple[str, bytes, bytes | None]]) -> None:
    fps = [r[0] for r in rows]
    keys = [r[1] for r in rows]
    afters = [r[2] for r in rows]
    frames = read_frames(scn, source, fps, keys, afters)
    expected = [encode_event(Event(scn, source, Op.READ, k, 0, fp, None, a)) for fp, k, a in rows]
    assert frames == expected
    for f in frames:
        decode_event(f)  # a valid frame, CRC included


def test_bad_input_is_refused_like_encode_event() -> None:
    with pytest.raises(ValueError, match="SCN"):
        read_frames(1 << 64, "t", ["00" * 8], [b"[1]"], [b""])
    with pytest.raises(ValueError, match="fingerprint"):
        read_frames(1, "t", ["00"], [b"[1]"], [b""])
