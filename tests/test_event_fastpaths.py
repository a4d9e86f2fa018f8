"""The per-event fast paths equal their reference paths.

* :func:`headrace._frozen.fast_constructor` builds the same frozen instances as the dataclasses'
  constructors (``RowChange``, ``Event``, ``ChangeEvent``): equal, same type, still frozen, hashing
  and pickling the same.
* :func:`~headrace.relay._codec.encode_window` (one pass, frames packed into the window's buffer)
  gives the bytes, count, first SCN and tables of :func:`encode_window_reference` (frame by frame),
  errors included, on generated windows over tables of several kinds: inserts, updates that keep
  or move the key, deletes, truncates, per-change times, byte limits; ``append_frame`` appends
  exactly what ``encode_frame`` returns.
* ``EventDecoder.decode_many`` returns what ``decode`` returns event by event, marker columns and
  schema changes included.
"""

from __future__ import annotations

import dataclasses
import pickle
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace._frozen import fast_constructor
from headrace.relay import Column, ColumnType, Event, Op, SchemaRegistry, TableMeta
from headrace.relay._codec import Codecs, encode_window, encode_window_reference
from headrace.relay._event import append_frame, encode_frame, iter_frames, split_windows
from headrace.relay._schema import UNCHANGED_MARKER, UNREPRESENTABLE_MARKER
from headrace.relay.client._decode import ChangeEvent, EventDecoder
from headrace.relay.sources._base import ChangeWindow, RowChange

SCNS = st.integers(min_value=-2, max_value=2**64) | st.integers(min_value=0, max_value=1000)
OPS = st.sampled_from(list(Op))


# -- fast_constructor ------------------------------------------------------------------------------


@given(
    st.tuples(SCNS, st.text(max_size=5), OPS, st.binary(max_size=6), st.integers(), st.text(max_size=16)),
    st.none() | st.binary(max_size=4),
    st.none() | st.binary(max_size=4),
    st.booleans(),
)
def test_fast_constructor_builds_what_the_constructor_builds(
    head: tuple[Any, ...], before: bytes | None, after: bytes | None, end: bool
) -> None:
    fields = (*head, before, after, end)
    made, built = fast_constructor(Event)(*fields), Event(*fields)
    assert made == built and type(made) is Event and repr(made) == repr(built)
    assert hash(made) == hash(built)
    assert pickle.loads(pickle.dumps(made)) == built
    assert dataclasses.replace(made, scn=1) == dataclasses.replace(built, scn=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.scn = 5  # type: ignore[misc]


def test_fast_constructor_covers_the_per_event_types_and_refuses_others() -> None:
    meta = TableMeta("t", (Column("id", ColumnType("long"), False),), ("id",))
    args = (7, meta, Op.INSERT, (1,), None, {"id": 1}, None)
    assert fast_constructor(RowChange)(*args) == RowChange(*args)
    ce = (1, "t", Op.UPDATE, [1], {"id": 1}, {"id": 2}, 5, True, "00" * 8, 2, True, ("x",), ("y",))
    made = fast_constructor(ChangeEvent)(*ce)
    assert made == ChangeEvent(*ce) and type(made) is ChangeEvent
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.after = None  # type: ignore[misc]

    @dataclasses.dataclass(slots=True)
    class Plain:
        a: int

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Plain, NoSlots):
        with pytest.raises(TypeError):
            fast_constructor(cls)


# -- encode_window ---------------------------------------------------------------------------------

T1 = TableMeta("t1", (Column("id", ColumnType("long"), False), Column("s", ColumnType("string"))), ("id",))
T2 = TableMeta("s.t2", (Column("a", ColumnType("string"), False), Column("b", ColumnType("long"))), ("a", "b"))
T3 = TableMeta("t3", (Column("x", ColumnType("double")),), ())  # no key
TABLES = [T1, T2, T3]


def _row(meta: TableMeta, draw: st.DrawFn) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for c in meta.columns:
        kind = c.type.kind
        v: Any = draw(st.integers(min_value=-5, max_value=5) if kind == "long" else st.text(max_size=3))
        if kind == "double":
            v = draw(st.floats())
        if c.nullable and draw(st.integers(min_value=0, max_value=4)) == 0:
            v = None
        out[c.name] = v
    if draw(st.integers(min_value=0, max_value=30)) == 0:
        out[meta.columns[0].name] = 2**70  # unrepresentable: both paths raise
    return out


@st.composite
def changes(draw: st.DrawFn) -> RowChange:
    meta = draw(st.sampled_from(TABLES))
    op = draw(st.sampled_from([Op.INSERT, Op.UPDATE, Op.UPDATE, Op.DELETE, Op.TRUNCATE, Op.READ]))
    scn = draw(st.integers(min_value=0, max_value=100) | st.just(-1) | st.just(2**64))
    ts = draw(st.none() | st.integers(min_value=0, max_value=10**13))
    if op is Op.TRUNCATE:
        return RowChange(scn, meta, op, (), None, None, ts)
    after = _row(meta, draw) if op is not Op.DELETE else None
    before = _row(meta, draw) if op in (Op.UPDATE, Op.DELETE) and draw(st.booleans()) else None
    if op is Op.DELETE and before is None:
        before = {k: _row(meta, draw)[k] for k in meta.key}
    image = after if after is not None else before
    assert image is not None
    key = tuple(image.get(k) for k in meta.key)
    return RowChange(scn, meta, op, key, before, after, ts)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "error", (type(exc), str(exc))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(changes(), max_size=8),
    st.integers(min_value=0, max_value=2**40),
    st.none() | st.integers(min_value=0, max_value=400),
)
def test_encode_window_equals_the_reference(cs: list[RowChange], ts_ms: int, limit: int | None) -> None:
    reg = SchemaRegistry(tempfile.mkdtemp())
    fast, ref = Codecs(reg), Codecs(reg)
    scn = max([c.scn for c in cs], default=0)
    got = _outcome(lambda: encode_window(ChangeWindow(scn, ts_ms, iter(cs)), fast, limit))
    want = _outcome(lambda: encode_window_reference(ChangeWindow(scn, ts_ms, iter(cs)), ref, limit))
    assert repr(got) == repr(want)


@given(
    st.tuples(
        SCNS, st.text(max_size=5), OPS, st.binary(max_size=6), st.integers(min_value=-(2**63), max_value=2**63 - 1)
    ),
    st.sampled_from(["00" * 8, "0123456789abcdef", "ab", "zz" * 8]),
    st.none() | st.binary(max_size=4),
    st.none() | st.binary(max_size=4),
    st.booleans(),
)
def test_append_frame_appends_encode_frame(
    head: tuple[Any, ...], fp: str, before: bytes | None, after: bytes | None, end: bool
) -> None:
    buf = bytearray(b"prefix")
    got = _outcome(lambda: append_frame(buf, *head, fp, before, after, end))
    want = _outcome(lambda: encode_frame(*head, fp, before, after, end))
    if want[0] == "ok":
        assert got == ("ok", None) and bytes(buf) == b"prefix" + want[1]
    else:
        assert got == want and bytes(buf) == b"prefix"


# -- decode_many -----------------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(changes(), min_size=1, max_size=10), st.booleans())
def test_decode_window_equals_decode_event_by_event(cs: list[RowChange], marked: bool) -> None:
    reg = SchemaRegistry(tempfile.mkdtemp())
    codecs = Codecs(reg)
    if marked:  # some changes in a second schema version of t1, with both marker columns
        m, name = T1.with_marker(UNCHANGED_MARKER)
        m = m.with_marker(UNREPRESENTABLE_MARKER)[0]
        cs = [
            dataclasses.replace(c, table=m, after={**c.after, name: ["s"]}) if c.table is T1 and c.after else c
            for c in cs
        ]
    cs = [dataclasses.replace(c, scn=i) for i, c in enumerate(cs)]
    ew = _outcome(lambda: encode_window(ChangeWindow(len(cs), 0, iter(cs)), codecs))
    if ew[0] != "ok" or ew[1] is None:
        return
    events = [e for w in split_windows(iter_frames(ew[1].data)) for e in w]

    def fetch(fp: str) -> Any:
        sv = reg.get(fp)
        assert sv is not None
        return sv

    a, b = EventDecoder(fetch), EventDecoder(fetch)
    for chunk in (events[:3], events[3:]):
        got = _outcome(lambda c=chunk: a.decode_many(c))  # type: ignore[misc]
        want = _outcome(lambda c=chunk: [b.decode(e) for e in c])  # type: ignore[misc]
        assert repr(got) == repr(want)


# -- decode_windows --------------------------------------------------------------------------------

EVENTS = st.builds(
    Event,
    st.integers(min_value=0, max_value=2**64 - 1),
    st.text(max_size=4),
    OPS,
    st.binary(max_size=5),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(["00" * 8, "0123456789abcdef"]),
    st.none() | st.binary(max_size=4),
    st.none() | st.binary(max_size=4),
    st.booleans(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(EVENTS, max_size=8), st.data())
def test_decode_windows_equals_split_windows_of_iter_frames(evs: list[Event], data: st.DataObject) -> None:
    from headrace.relay._event import decode_windows, encode_event

    body = bytearray(b"".join(encode_event(e) for e in evs))
    damage = data.draw(st.sampled_from(["none", "none", "flip", "cut", "extra"]))
    if damage == "flip" and body:
        i = data.draw(st.integers(min_value=0, max_value=len(body) - 1))
        body[i] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
    elif damage == "cut" and body:
        del body[data.draw(st.integers(min_value=0, max_value=len(body) - 1)) :]
    elif damage == "extra":
        body += data.draw(st.binary(min_size=1, max_size=50))
    got = _outcome(lambda: decode_windows(bytes(body)))
    want = _outcome(lambda: list(split_windows(iter_frames(bytes(body)))))
    assert repr(got) == repr(want)


# -- decode_key ------------------------------------------------------------------------------------


def _key_reference(key: bytes) -> list[Any]:
    import json

    from headrace.errors import InvalidInput

    value = json.loads(key)
    if not isinstance(value, list):
        raise InvalidInput("bad_key", "an event key must be a JSON array")
    return value


@given(
    st.binary(max_size=8).map(lambda b: b"[" + b + b"]")
    | st.text(alphabet="-+0123456789.e []\u0663", max_size=8).map(str.encode)
    | st.binary(max_size=6)
)
def test_decode_key_equals_json(key: bytes) -> None:
    from headrace.relay._event import decode_key

    got = _outcome(lambda: decode_key(key))
    want = _outcome(lambda: _key_reference(key))
    assert repr(got) == repr(want)
    if got[0] == "ok":
        assert [type(v) for v in got[1]] == [type(v) for v in want[1]]
