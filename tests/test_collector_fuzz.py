"""Hypothesis fuzzing of ``POST /v1/chunks`` against one real collector process.

Each generated request is either a hostile one (malformed framing or JSON, wrong types, out-of-range
offsets, bad names or tags, bad CRCs, oversize bodies or chunks, random bytes, or a hostile zstd body
with ``Content-Encoding: zstd``: cut, bit-flipped, trailing bytes, a bomb, no declared size, two
frames, a frame that holds no batch) or a valid batch with random valid names, tags and offsets up
to the largest Avro long, sent as is or zstd-compressed. Every request must get a 4xx or a
200 (never a 5xx, never a dead process), and at the end the sink holds exactly the valid chunks, each
exactly once: anything a rejected request wrote would show up as an extra record.
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from collector_helpers import done_records, start_collector
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace._chunk import BATCH_CONTENT_TYPE

MAX_LONG = (1 << 63) - 1
MAX_BODY = 32 << 10
MAX_CHUNK = 4 << 10
# The name rules restated (docs/collector.md), independent of headrace._names: used to make sure a
# "bad name" really is bad.
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-=@+]{0,199}")
STREAM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-=@+/]{0,1023}")


def good_stream(s: object) -> bool:
    return isinstance(s, str) and bool(STREAM.fullmatch(s)) and all(p not in {"", ".", ".."} for p in s.split("/"))


Request = tuple[str, bytes, dict[str, Any] | None]  # (kind, body, the header of a valid chunk or None)


def frame(chunks: list[tuple[bytes, bytes]], *, crc_flip: bool = False, count: int | None = None) -> bytes:
    out = [b"HRCB", b"\x01", struct.pack(">I", len(chunks) if count is None else count)]
    for header, data in chunks:
        crc = zlib.crc32(data, zlib.crc32(header)) ^ (1 if crc_flip else 0)
        out += [struct.pack(">I", len(header)), header, struct.pack(">I", len(data)), data, struct.pack(">I", crc)]
    return b"".join(out)


_FIRST = "AZaz09_"
_REST = "AZaz09_.-=@+"
# cheaper to draw than st.from_regex(NAME): generation, not the collector, bounds the example rate
names = st.builds(lambda a, b: a + b, st.sampled_from(_FIRST), st.text(_REST, max_size=10))
tag_names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=12)
tag_values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
datas = st.binary(min_size=0, max_size=64)


@st.composite
def valid_chunk(draw: st.DrawFn) -> tuple[dict[str, Any], bytes]:
    data = draw(datas)
    start = draw(
        st.one_of(st.integers(0, 1 << 20), st.integers(0, MAX_LONG - len(data)), st.just(MAX_LONG - len(data)))
    )
    h = {
        "source": draw(names),
        "stream": "/".join(draw(st.lists(names, min_size=1, max_size=3))),
        "data_type": draw(names),
        "seq_start": start,
        "seq_end": start + len(data),
        "tags": draw(st.dictionaries(tag_names, tag_values, max_size=3)),
    }
    return h, data


bad_ints = st.one_of(
    st.integers(MAX_LONG + 1, 1 << 70),
    st.integers(-(1 << 70), -1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(max_size=5),
    st.none(),
    st.lists(st.integers(), max_size=2),
)
bad_names = st.one_of(
    st.text(max_size=30).filter(lambda s: not NAME.fullmatch(s) or s in {".", ".."}),
    names.map(lambda s: s + "\n"),
    names.map(lambda s: "\n" + s),
    st.sampled_from(["..", ".", "", "/etc/passwd", "a" * 201, "a\x00b"]),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=3), max_size=2),
)
bad_tags = st.one_of(
    st.dictionaries(st.text(st.characters(blacklist_categories=("Cs",)), max_size=5), tag_values, min_size=1).filter(
        lambda d: any(not k or re.search(r"[\x00-\x1f\x7f]", k) for k in d)
    ),
    st.dictionaries(tag_names, st.one_of(st.integers(), st.none(), st.booleans()), min_size=1),
    st.dictionaries(tag_names, tag_values.map(lambda v: v + "\x00"), min_size=1),
    st.dictionaries(tag_names.map(lambda k: k + "\n"), tag_values, min_size=1),
    st.lists(st.tuples(tag_names, tag_values), min_size=1, max_size=2),
    st.just({f"k{i}": "v" for i in range(65)}),
    st.just({"k": "v" * 1025}),
    st.integers(),
    st.text(max_size=5),
)


@st.composite
def hostile_header(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A chunk (header bytes, data) with a valid CRC and at least one thing wrong in its header."""
    h, data = draw(valid_chunk())
    what = draw(st.sampled_from(["seq", "range", "name", "tags", "missing", "extra", "constant", "json", "dup"]))
    if what == "seq":
        h[draw(st.sampled_from(["seq_start", "seq_end"]))] = draw(bad_ints)
    elif what == "range":
        start = draw(st.integers(MAX_LONG - len(data) + 1, MAX_LONG + 10)) if data else MAX_LONG + 1
        h["seq_start"], h["seq_end"] = start, start + len(data)
        if draw(st.booleans()):
            h["seq_start"], h["seq_end"] = h["seq_end"] + 1, h["seq_start"]  # seq_end < seq_start
    elif what == "name":
        field = draw(st.sampled_from(["source", "stream", "data_type"]))
        h[field] = draw(bad_names.filter(lambda v: not good_stream(v)) if field == "stream" else bad_names)
    elif what == "tags":
        h["tags"] = draw(bad_tags)
    elif what == "missing":
        del h[draw(st.sampled_from(["source", "stream", "data_type", "seq_start", "seq_end"]))]
    elif what == "extra":
        h[draw(st.text(max_size=8).filter(lambda k: k not in h))] = draw(st.integers())
    elif what == "constant":
        key = draw(st.sampled_from(["seq_start", "seq_end"]))
        text = json.dumps(h).replace(
            f'"{key}": {h[key]}', f'"{key}": {draw(st.sampled_from(["Infinity", "-Infinity", "NaN"]))}'
        )
        return text.encode(), data
    elif what == "json":
        return draw(st.one_of(st.binary(max_size=40), st.text(max_size=40).map(str.encode))), data
    else:  # a duplicate key: the last one would win in a lax parser
        text = json.dumps(h)[:-1] + f', "seq_end": {h["seq_end"]}}}'
        return text.encode(), data
    return json.dumps(h).encode(), data


@st.composite
def request(draw: st.DrawFn) -> Request:
    kind = draw(
        st.sampled_from(
            ["valid", "header", "header+good", "crc", "framing", "random", "oversize", "bigchunk", "zstd", "zstd-bad"]
        )
    )
    if kind == "valid" or kind == "zstd":  # zstd: the same, sent compressed
        h, data = draw(valid_chunk())
        return kind, frame([(json.dumps(h).encode(), data)]), {**h, "data": data}
    if kind == "zstd-bad":  # a hostile zstd body: never a batch to write
        h, data = draw(valid_chunk())
        good = zstandard.ZstdCompressor().compress(frame([(json.dumps(h).encode(), data)]))
        how = draw(st.sampled_from(["cut", "flip", "trailing", "garbage", "bomb", "sizeless", "two", "bad-inside"]))
        if how == "cut":
            return kind, good[: draw(st.integers(0, len(good) - 1))], None
        if how == "flip":
            i = draw(st.integers(0, len(good) - 1))
            flipped = good[:i] + bytes([good[i] ^ draw(st.integers(1, 255))]) + good[i + 1 :]
            try:  # a flip in a bit the decoder ignores (a reserved header bit) leaves the same batch: valid
                same = zstandard.ZstdDecompressor().decompress(flipped) == frame([(json.dumps(h).encode(), data)])
            except zstandard.ZstdError:
                same = False
            if same:
                return "zstd", frame([(json.dumps(h).encode(), data)]), {**h, "data": data}
            return kind, flipped, None
        if how == "trailing":
            return kind, good + draw(st.binary(min_size=1, max_size=8)), None
        if how == "garbage":
            return kind, draw(st.binary(max_size=60)), None
        if how == "bomb":
            return kind, _BOMB, None
        if how == "sizeless":
            return kind, zstandard.ZstdCompressor(write_content_size=False).compress(frame([(b"{}", b"")])), None
        if how == "two":
            return kind, good + good, None
        return kind, zstandard.ZstdCompressor().compress(draw(st.binary(max_size=100))), None  # not a batch inside
    if kind == "valid":
        h, data = draw(valid_chunk())
        return kind, frame([(json.dumps(h).encode(), data)]), {**h, "data": data}
    if kind in ("header", "header+good"):
        chunks = [draw(hostile_header())]
        if kind == "header+good":  # a valid chunk in the same batch must not be written either
            h, data = draw(valid_chunk())
            chunks.insert(draw(st.integers(0, 1)), (json.dumps(h).encode(), data))
        return kind, frame(chunks), None
    if kind == "crc":
        h, data = draw(valid_chunk())
        return kind, frame([(json.dumps(h).encode(), data)], crc_flip=True), None
    if kind == "framing":
        h, data = draw(valid_chunk())
        body = frame([(json.dumps(h).encode(), data)])
        how = draw(st.sampled_from(["truncate", "trailing", "magic", "version", "count"]))
        if how == "truncate":
            return kind, body[: draw(st.integers(0, len(body) - 1))], None
        if how == "trailing":
            return kind, body + draw(st.binary(min_size=1, max_size=8)), None
        if how == "magic":
            return kind, b"HRCX" + body[4:], None
        if how == "version":
            return kind, body[:4] + bytes([draw(st.integers(2, 255))]) + body[5:], None
        return kind, frame([(json.dumps(h).encode(), data)], count=draw(st.integers(2, (1 << 32) - 1))), None
    if kind == "random":
        return (
            kind,
            draw(st.one_of(st.binary(max_size=200), st.binary(max_size=200).map(lambda b: b"HRCB\x01" + b))),
            None,
        )
    if kind == "oversize":
        return kind, b"HRCB\x01" + b"\x00" * draw(st.integers(MAX_BODY - 4, MAX_BODY + 100)), None
    h, _ = draw(valid_chunk())  # bigchunk: one chunk longer than max_chunk_bytes
    data = b"x" * draw(st.integers(MAX_CHUNK + 1, MAX_CHUNK + 50))
    h["seq_end"] = h["seq_start"] + len(data)
    return kind, frame([(json.dumps(h).encode(), data)]), None


_BOMB = zstandard.ZstdCompressor(level=1).compress(bytes(MAX_BODY * 64))  # declares 64x max_body_bytes


def run_fuzz(daemons: Any, tmp_path: Path, examples: int) -> None:
    d, url, sink = start_collector(daemons, tmp_path, max_body_bytes=MAX_BODY, max_chunk_bytes=MAX_CHUNK)
    client = httpx.Client(timeout=30)
    expected: list[dict[str, Any]] = []
    kinds: Counter[str] = Counter()
    sent = 0

    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(request())
    def one(req: Request) -> None:
        nonlocal sent
        kind, body, valid = req
        if valid is not None:  # a stream of its own, so valid chunks never overlap one another
            valid = {**valid, "stream": f"zz=fuzz{sent}/{valid['stream']}"}
            h = {k: v for k, v in valid.items() if k != "data"}
            body = frame([(json.dumps(h).encode(), valid["data"])])
        headers = {"content-type": BATCH_CONTENT_TYPE}
        if kind.startswith("zstd"):
            headers["content-encoding"] = "zstd"
            if kind == "zstd":
                body = zstandard.ZstdCompressor().compress(body)
        r = client.post(url + "/v1/chunks", content=body, headers=headers)
        sent += 1
        assert r.status_code < 500, (kind, r.status_code, r.text)
        if valid is not None:
            assert r.status_code == 200 and r.json() == {"acked": 1, "duplicates": 0}, (kind, r.text, valid)
            if valid["data"]:  # an empty chunk is acked and has nothing to write
                expected.append(valid)
        elif r.status_code == 200:  # random bytes can spell an empty batch: acked, nothing written
            assert kind in ("random", "framing", "zstd-bad") and r.json() == {"acked": 0, "duplicates": 0}, (kind, body)
        else:
            assert 400 <= r.status_code < 500, (kind, r.status_code, r.text)
            assert r.json()["error"] and r.json()["detail"]
        kinds[kind] += 1

    one()
    assert d.alive() and client.get(url + "/healthz").status_code == 200
    assert d.stop() == 0
    got = Counter(
        (
            r["source"],
            r["stream"],
            r["data_type"],
            r["seq_start"],
            r["seq_end"],
            r["data"],
            tuple(sorted(r["tags"].items())),
        )
        for r in done_records(sink)
    )
    want = Counter(
        (
            v["source"],
            v["stream"],
            v["data_type"],
            v["seq_start"],
            v["seq_end"],
            v["data"],
            tuple(sorted(v["tags"].items())),
        )
        for v in expected
    )
    assert got == want
    assert sent >= examples and len(expected) > examples // 40 and len(kinds) == 10, (sent, kinds)
    print(f"fuzzed {sent} requests: {dict(kinds)}; {len(expected)} valid chunks in the sink exactly once")


def test_fuzz_collector_batches(daemons: Any, tmp_path: Path) -> None:
    run_fuzz(daemons, tmp_path, 10_000)


@pytest.mark.slow
def test_fuzz_collector_batches_long(daemons: Any, tmp_path: Path) -> None:
    run_fuzz(daemons, tmp_path, 50_000)
