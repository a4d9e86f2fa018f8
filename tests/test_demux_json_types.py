"""The json processor on fields whose type changes: every valid JSON object line is a row, values
round-trip, and the rule that joins parts within a batch is the one that joins batches."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from headrace._chunk import Chunk, chunk_to_record
from headrace.batch._demux import demux_batch
from headrace.batch._lines import split_records
from headrace.batch._processors import load_processor
from headrace.batch._unify import unify_tables

DAY = dt.date(2026, 1, 2)


def run(data: bytes, options: dict[str, Any] | None = None) -> tuple[pa.Table, list[dict[str, Any]]]:
    chunk = chunk_to_record(Chunk("host-a", "x.log", "t", 0, len(data), data), 1)
    good, errors = demux_batch(load_processor("json", options or {}, "demux.types.t"), split_records("t", DAY, [chunk]))
    return good, errors.to_pylist()


def lines_of(objs: list[Any]) -> bytes:
    return b"".join(json.dumps(o, ensure_ascii=False).encode() + b"\n" for o in objs)


def test_a_field_that_turns_string_within_a_batch_makes_a_string_column_not_errors() -> None:
    objs: list[dict[str, Any]] = [{"order": i, "msg": f"m{i}"} for i in range(10)]
    objs[5]["order"] = "ord-5"
    good, errors = run(lines_of(objs))
    assert errors == []
    assert good.schema.field("order").type == pa.string()
    assert good["order"].to_pylist() == ["0", "1", "2", "3", "4", "ord-5", "6", "7", "8", "9"]
    assert good["msg"].to_pylist() == [f"m{i}" for i in range(10)]


def test_many_type_changes_in_one_batch_all_rows() -> None:
    # past the clash count where the batch's remaining lines go through Python's json
    objs = [{"order": str(i) if i % 3 == 0 else i, "v": 0.5 if i % 2 else 1} for i in range(200)]
    good, errors = run(lines_of(objs))
    assert errors == []
    assert good["order"].to_pylist() == [str(i) for i in range(200)]
    assert good.schema.field("v").type == pa.float64()
    assert good["v"].to_pylist() == [0.5 if i % 2 else 1.0 for i in range(200)]


def test_integers_stay_exact() -> None:
    big = 2**53 + 1
    good, errors = run(lines_of([{"a": 1, "b": 10**30, "c": 2**62}, {"a": 1.5, "b": 1, "c": 3}, {"a": big}]))
    assert errors == []
    # int and double: a double only when every integer is exact as one; else the JSON texts
    assert good["a"].to_pylist() == ["1", "1.5", str(big)]
    assert good["b"].to_pylist() == [str(10**30), "1", None]  # beyond int64: the digits
    assert good.schema.field("c").type == pa.int64() and good["c"].to_pylist() == [2**62, 3, None]
    good, _ = run(lines_of([{"a": 1}, {"a": 1.5}, {"a": 2**53}]))
    assert good.schema.field("a").type == pa.float64() and good["a"].to_pylist() == [1.0, 1.5, 2.0**53]
    good, _ = run(lines_of([{"a": 1e20}, {"a": 1}, {"a": 0.30000000000000004}]))  # big doubles, no big integer
    assert good.schema.field("a").type == pa.float64() and good["a"].to_pylist() == [1e20, 1.0, 0.30000000000000004]


def test_valid_json_arrows_reader_refuses_is_a_row() -> None:
    lines = b'{"x": 1, "x": 2}\n{"y": 1e400}\n{"z": [1, "a", {"k": null}]}\n{"t": "2026-01-02T03:04:05Z"}\n'
    good, errors = run(lines)
    assert errors == []
    rows = good.select(["x", "y", "z", "t"]).to_pylist()
    assert [r["x"] for r in rows] == [2, None, None, None]  # the last duplicate wins, as json.loads
    assert rows[1]["y"] == float("inf")  # a number beyond a double's range: json.loads reads it so
    assert json.loads(rows[2]["z"]) == [1, "a", {"k": None}]
    assert rows[3]["t"] == dt.datetime(2026, 1, 2, 3, 4, 5)  # the reader's own inference, as in a clean batch


def test_a_lone_surrogate_is_an_error_among_many_type_changes() -> None:
    objs = [{"order": str(i) if i % 2 else i} for i in range(40)]
    data = lines_of(objs[:30]) + b'{"order": "\\ud800"}\n' + lines_of(objs[30:])
    good, errors = run(data)
    assert [e["raw"] for e in errors] == ['{"order": "\\ud800"}']
    assert good["order"].to_pylist() == [str(i) for i in range(40)]


def test_declared_fields_of_another_type_are_still_errors() -> None:
    data = b'{"n": 1, "o": 1}\n{"n": "x", "o": 2}\n{"n": 3, "o": "s"}\n{"n": 4, "o": [1, "a"]}\n'
    good, errors = run(data, {"fields": {"n": "int"}})
    assert [e["raw"] for e in errors] == ['{"n": "x", "o": 2}']
    assert good["n"].to_pylist() == [1, 3, 4]
    assert good["o"].to_pylist() == ["1", "s", '[1,"a"]']


def test_across_batches_the_same_rule() -> None:
    t1 = pa.table({"order": pa.array([1, 2]), "v": pa.array([1, 2]), "s": pa.array([{"a": 1}, {"a": 1}])})
    t2 = pa.table({"order": pa.array(["x"]), "v": pa.array([0.5]), "s": pa.array([{"b": "q"}])})
    t3 = pa.table({"v": pa.array([2**53 + 1])})
    joined = unify_tables([t1, t2])
    assert joined["order"].to_pylist() == ["1", "2", "x"]
    assert joined["v"].type == pa.float64()
    assert joined["s"].to_pylist() == [{"a": 1, "b": None}, {"a": 1, "b": None}, {"a": None, "b": "q"}]
    assert unify_tables([t2, t3])["v"].to_pylist() == ["0.5", str(2**53 + 1)]


# -- property: any mix of value types, with invalid lines among them --------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**80), 2**80),
    st.integers(-(2**60), 2**60),
    st.integers(-1000, 1000),
    st.sampled_from([2**53 - 1, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63)]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["", "é", "日本", "😀", 'q"uote', "back\\slash", "new\nline"]),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.sampled_from("abc"), inner, max_size=3)),
    max_leaves=6,
)
_objects = st.dictionaries(st.sampled_from(["order", "v", "msg", "é", "n"]), _values, max_size=5)
_bad = st.sampled_from(
    ['{"a": 1', "not json", "[1, 2]", '{"a": }', "{oops}", '{"a": 1}}', '"text"', "{", "{NaN}", '{"s": "\\ud800"}']
)


def _norm(v: Any) -> Any:
    """A JSON value as an Arrow column can hold it: a struct's missing field and a null one are alike."""
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_norm(x) for x in v]
    return v


def _same(cell: Any, want: Any, string_column: bool) -> bool:
    if want is None:
        return cell is None
    if string_column:
        if isinstance(want, str):
            return bool(cell == want)
        return _same(json.loads(cell), want, False)
    if isinstance(want, bool) or isinstance(cell, bool):
        return type(cell) is type(want) and cell == want
    if isinstance(want, dict):
        c, w = (_norm(cell), _norm(want)) if isinstance(cell, dict) else (None, {})
        return c is not None and c.keys() == w.keys() and all(_same(c[k], w[k], False) for k in w)
    if isinstance(want, list):
        return (
            isinstance(cell, list)
            and len(cell) == len(want)
            and all(_same(a, b, False) for a, b in zip(cell, want, strict=True))
        )
    return bool(cell == want)  # an int read as a double compares exactly (2**53 + 1 != 2.0**53)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.one_of(_objects.map(lambda o: ("ok", o)), _bad.map(lambda b: ("bad", b))), max_size=40))
def test_every_valid_object_line_is_a_row_and_round_trips(items: list[tuple[str, Any]]) -> None:
    lines = [json.dumps(x, ensure_ascii=False) if kind == "ok" else x for kind, x in items]
    data = "".join(line + "\n" for line in lines).encode()
    good, errors = run(data)
    starts = [sum(len(line.encode()) + 1 for line in lines[:i]) for i in range(len(lines))]
    assert sorted(starts.index(e["_offset"]) for e in errors) == [i for i, (k, _) in enumerate(items) if k == "bad"]
    objs = [x for kind, x in items if kind == "ok"]
    assert good.num_rows == len(objs)
    assert good["_offset"].to_pylist() == [starts[i] for i, (k, _) in enumerate(items) if k == "ok"]
    for name in {k for o in objs for k in o}:
        string_column = pa.types.is_string(good.schema.field(name).type)
        for cell, obj in zip(good[name].to_pylist(), objs, strict=True):
            assert _same(cell, obj.get(name), string_column), (name, cell, obj.get(name), good.schema)


# -- property: the bulk reads (one read, or a few grouped by mixed fields) give what the careful path gives --


class _Careful:
    """The json processor with its bulk reads turned off: every batch goes the careful way (parts,
    one line at a time where Arrow refuses, Python's json after many type changes)."""

    def __init__(self, options: dict[str, Any]) -> None:
        from headrace.batch._processors_json import JsonProcessor

        self.proc = JsonProcessor(options)
        self.proc._bulk = lambda recs: None  # type: ignore[method-assign]

    def parse(self, batch: Any) -> Any:
        return self.proc.parse(batch)


def _both(data: bytes, options: dict[str, Any] | None = None) -> None:
    chunk = chunk_to_record(Chunk("host-a", "x.log", "t", 0, len(data), data), 1)
    fast = demux_batch(load_processor("json", options or {}, "demux.types.t"), split_records("t", DAY, [chunk]))
    careful = demux_batch(_Careful(options or {}), split_records("t", DAY, [chunk]))  # type: ignore[arg-type]
    for got, want in zip(fast, careful, strict=True):
        assert got.schema == want.schema, (got.schema, want.schema)
        if got.equals(want):
            continue
        for name in got.column_names:
            for a, b in zip(got[name].to_pylist(), want[name].to_pylist(), strict=True):
                assert a == b or _careful_mangled(a, b), (name, a, b)


def _careful_mangled(fast: Any, careful: Any) -> bool:
    """The careful path's one known difference: it reads a batch in parts split where a field changes
    type, and a part whose strings of another field all look like timestamps gets a timestamp column;
    joined with a part where that field stays a string, the timestamps become Arrow's text of them
    (``2026-01-02 03:04:05``), not the strings as written. One read of the batch (the bulk path)
    keeps the strings as written, as a batch without type changes does."""
    if not isinstance(fast, str):
        return False
    for unit in ("s", "ms", "us", "ns"):
        for tz in (None, "UTC"):
            try:
                ts = pa.array([fast]).cast(pa.timestamp(unit, tz)).cast(pa.timestamp(unit))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            if careful == ts.cast(pa.string())[0].as_py():
                return True
    return False


_order_values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.integers(-(10**6), 10**6).map(lambda i: f"ord-{i}"),
    st.integers(0, 10**6).map(str),
    st.sampled_from(["2026-01-02", "2026-01-02T03:04:05Z", "", "1.5", "é", 'q"uote', 2**63, 1.5, 100.0, True, None]),
    st.integers(2**53, 2**70),
)
_log_objects = st.fixed_dictionaries(
    {
        "ts": st.sampled_from(["2026-10-01T10:00:00.123Z", "2026-10-02T11:00:00Z"]),
        "n": st.integers(0, 99),
        "ref": st.one_of(st.integers(0, 9), st.sampled_from(["r1", "r2"])),
    },
    optional={
        "order": _order_values,
        "user_id": st.integers(1, 10**7),
        "ms": st.floats(0, 1e4, allow_nan=False).map(lambda f: round(f, 2)),
        "msg": st.sampled_from(["order placed", 'say "order": "x"', "null", "retry"]),
        "tags": st.lists(st.sampled_from(["a", "b"]), max_size=2),
        "other": st.one_of(st.integers(0, 9), st.sampled_from(["o1", "o2"])),
        "nested": st.fixed_dictionaries({"order": st.one_of(st.integers(0, 5), st.just("in"))}),
    },
)


def _line(obj: dict[str, Any], how: int) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    if how == 1:  # compact separators
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    if how == 2:  # an escaped key the grouping's match cannot see
        return text.replace('"order"', '"ord\\u0065r"', 1)
    return text


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            *[st.tuples(_log_objects, st.sampled_from([0, 0, 0, 0, 0, 0, 1, 2]), st.none())] * 6,
            st.tuples(_log_objects, st.just(-1), st.integers(1, 60)),  # a truncated line
            st.tuples(st.none(), st.just(-2), _bad),  # stray text, broken JSON
        ),
        max_size=60,
    )
)
def test_bulk_reads_give_what_the_careful_path_gives(items: list[tuple[Any, int, Any]]) -> None:
    lines = []
    for obj, how, extra in items:
        if how == -2:
            lines.append(extra)
        elif how == -1:
            lines.append(_line(obj, 0)[:extra].rstrip())
        else:
            lines.append(_line(obj, how))
    _both("".join(line + "\n" for line in lines).encode())


def test_bulk_reads_many_mixed_fields_and_bad_lines() -> None:
    import random

    rng = random.Random(7)
    lines = []
    for i in range(3000):
        obj: dict[str, Any] = {"ts": "2026-10-01T10:00:00.5Z", "n": i}
        for k in ("a", "b", "c", "d", "e", "f"):
            if rng.random() < 0.5:
                obj[k] = rng.randrange(100) if rng.random() < 0.7 else f"s{rng.randrange(100)}"
        line = json.dumps(obj)
        if rng.random() < 0.01:
            line = line[: rng.randrange(5, len(line))]
        lines.append(line)
    _both("".join(line + "\n" for line in lines).encode())
    _both("".join(line + "\n" for line in lines if line.endswith("}")).encode())


_bench_objects = st.fixed_dictionaries(
    {"ts": st.sampled_from(["2026-10-01T10:00:00.123Z", "2026-10-02T11:00:00.5Z"]), "n": st.integers(0, 99)},
    optional={
        "order": st.one_of(st.integers(-(10**6), 10**6), st.integers(0, 10**6).map(lambda i: f"ord-{i}")),
        "ref": st.one_of(st.integers(0, 9), st.sampled_from(["r1", "9", ""])),
        "user_id": st.integers(1, 10**7),
        "ms": st.floats(0, 1e4, allow_nan=False).map(lambda f: round(f, 2)),
        "tags": st.lists(st.sampled_from(["a", "b"]), min_size=1, max_size=2),
        "msg": st.sampled_from(["order placed", 'say "order": "x"', "é"]),
    },
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            *[st.tuples(_bench_objects, st.sampled_from([0, 0, 0, 1]))] * 8,
            st.tuples(_bench_objects, st.just(-1)),
            st.tuples(st.sampled_from(['{"a": }', "{oops}", "{NaN}", '{"n": 1,}', "{'n': 1}"]), st.just(-2)),
        ),
        max_size=80,
    )
)
def test_bulk_reads_on_log_like_lines_with_bad_ones(items: list[tuple[Any, int]]) -> None:
    # the shape of bench/demux_duckdb.py's data: optional fields, a number that is sometimes a string,
    # truncated lines and broken JSON among them
    lines = [x if how == -2 else _line(x, how) if how >= 0 else _line(x, 0)[:-7] for x, how in items]
    _both("".join(line + "\n" for line in lines).encode())


def test_batches_whose_fields_come_in_another_order_are_written_as_they_come() -> None:
    import io

    import pyarrow.parquet as pq

    from headrace.batch._demux import _PartWriter

    t1 = pa.table({"a": [1, 2], "b": ["x", "y"]})
    t2 = pa.table({"b": ["z"], "a": [3]})
    t3 = pa.table({"b": [1], "a": [4]})  # another type: all batches joined by the rule, as before
    for tables in ([t1, t2], [t1, t2, t3]):
        out = _PartWriter("zstd")
        for t in tables:
            out.add(t)
        data = out.finish()
        assert data is not None
        assert out.mixed == (len(tables) == 3)
        assert pq.read_table(io.BytesIO(data)).equals(unify_tables(tables))
