"""The chunk batch codec: round trips, and every malformed body is refused whole."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headrace._chunk import Chunk, decode_batch, encode_batch
from headrace.errors import InvalidInput


def chunk(data: bytes = b"a\nb\n", stream: str = "app/x.log", start: int = 0, **kw: object) -> Chunk:
    base = dict(
        source="host-a",
        stream=stream,
        data_type="app",
        seq_start=start,
        seq_end=start + len(data),
        data=data,
        tags={"k": "v"},
    )
    base.update(kw)
    return Chunk(**base)  # type: ignore[arg-type]


@given(st.lists(st.binary(max_size=300), max_size=8))
def test_round_trip(datas: list[bytes]) -> None:
    chunks = [chunk(d, start=i * 1000) for i, d in enumerate(datas)]
    assert decode_batch(encode_batch(chunks)) == chunks


@given(st.binary(max_size=200))
def test_garbage_is_refused(body: bytes) -> None:
    # Any input either decodes or raises InvalidInput; nothing else escapes.
    with contextlib.suppress(InvalidInput):
        decode_batch(body)


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:-1], "malformed"),
        (lambda b: b + b"x", "malformed"),
        (lambda b: b[:-5] + bytes([b[-5] ^ 1]) + b[-4:], "bad_crc"),
        (lambda b: b"XXXX" + b[4:], "malformed"),
    ],
)
def test_corruption(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    body = encode_batch([chunk()])
    with pytest.raises(InvalidInput) as e:
        decode_batch(mutate(body))
    assert e.value.reason == reason


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"stream": "../etc/passwd"}, "bad_stream"),
        ({"stream": "/abs/path"}, "bad_stream"),
        ({"stream": "a/\x00b"}, "bad_stream"),
        ({"data_type": "a/b"}, "bad_data_type"),
        ({"data_type": ".."}, "bad_data_type"),
        ({"source": ""}, "bad_source"),
        ({"seq_end": 99}, "bad_offsets"),
    ],
)
def test_bad_names_and_offsets(kw: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidInput) as e:
        decode_batch(encode_batch([chunk(**kw)]))
    assert e.value.reason == reason


def test_oversize_chunk() -> None:
    with pytest.raises(InvalidInput) as e:
        decode_batch(encode_batch([chunk(b"x" * 100)]), max_chunk_bytes=10)
    assert e.value.reason == "chunk_too_large"
