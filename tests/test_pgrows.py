"""The compiled pgoutput readers (the PostgreSQL source's hot path) equal the reference path.

For generated relations (built-in column types, replica identities, key columns) and generated INSERT
payloads — valid and invalid text for each type, NULLs, unchanged-TOAST and binary column kinds, a
wrong column count, truncated and overlong payloads, an unknown relation — the assembler's
``feed_payload`` returns exactly the change ``feed(decode(payload))`` returns, or raises the same
error, and leaves the assembler in the same state. The same for UPDATE and DELETE payloads: old key
(``K``) and old row (``O``) tuples, realistic ones (the identity columns sent, the others NULL) and
arbitrary ones, new tuples with unchanged-TOAST columns (filled in from the old tuple, or marked, or
the error of a TOASTed key without an old key), wrong tags, counts and lengths.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headrace.relay.sources._pgoutput import decode
from headrace.relay.sources._pgrows import Refused, compile_insert, compile_tuple
from headrace.relay.sources._pgstream import PgChangeAssembler, RelationCatalog

# oid → text values of that type (valid ones, edge values, and text its parser refuses)
TEXTS: dict[int, st.SearchStrategy[str]] = {
    20: st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str)
    | st.sampled_from(["0", "-0", "+1", "1_0", " 1", "x"]),
    23: st.integers(min_value=-(2**31), max_value=2**31 - 1).map(str),
    21: st.integers(min_value=-(2**15), max_value=2**15 - 1).map(str),
    25: st.text(max_size=12) | st.sampled_from(["", "é", "\x00", "a\nb"]),
    1043: st.text(max_size=5),
    701: st.floats().map(repr) | st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "1e309", "1.5", "nan(x)"]),
    700: st.floats(width=32).map(repr),
    16: st.sampled_from(["t", "f", "x"]),
    1700: st.decimals(allow_nan=True).map(str) | st.sampled_from(["NaN", "Infinity", "-Infinity", "1.50", "abc"]),
    1082: st.dates().map(str) | st.sampled_from(["infinity", "-infinity", "2024-01-01 BC", "12345-01-01", "x"]),
    1184: st.sampled_from(["2024-01-01 08:00:00+00", "2024-02-29 13:45:01.5+05:30", "infinity", "0044-03-15 BC+00"]),
    1114: st.sampled_from(["2024-01-01 00:00:00.123456", "-infinity", "2024-13-01 00:00:00"]),
    114: st.sampled_from(['{"a": 1}', "[1, 2.50]", "null", "1e400", '"x"']),
    3802: st.sampled_from(['{"a": 1}', '{"b": [1, 2]}', "null"]),
    17: st.binary(max_size=6).map(lambda b: "\\x" + b.hex()) | st.sampled_from(["\\xzz", "abc"]),
    2950: st.uuids().map(str) | st.sampled_from(["not-a-uuid"]),
    1007: st.sampled_from(["{1,NULL,3}", "{}", "{{1,2},{3,4}}", "{x}"]),
    1009: st.sampled_from(['{"a b","c,d",NULL}', "{}", '{"\\""}']),
}
OIDS = sorted(TEXTS)
TYPMOD = {1700: (12 << 16 | 3) + 4, 1043: 14}

RELID = 0x4005


def _cstr(s: str) -> bytes:
    return s.encode() + b"\x00"


def relation_payload(cols: list[tuple[str, int, bool]], ident: str) -> bytes:
    out = b"R" + struct.pack("!I", RELID) + _cstr("public") + _cstr("t") + ident.encode() + struct.pack("!H", len(cols))
    for name, oid, is_key in cols:
        out += bytes([1 if is_key else 0]) + _cstr(name) + struct.pack("!Ii", oid, TYPMOD.get(oid, -1))
    return out


@st.composite
def relations(draw: st.DrawFn) -> tuple[list[tuple[str, int, bool]], str]:
    n = draw(st.integers(min_value=1, max_value=6))
    names = draw(
        st.lists(st.text(min_size=1, max_size=4).filter(lambda s: "\x00" not in s), min_size=n, max_size=n, unique=True)
    )
    oids = draw(st.lists(st.sampled_from(OIDS), min_size=n, max_size=n))
    ident = draw(st.sampled_from("dfni"))
    keys = draw(st.lists(st.booleans(), min_size=n, max_size=n)) if ident in "di" else [False] * n
    return [(nm, oid, k) for nm, oid, k in zip(names, oids, keys, strict=True)], ident


@st.composite
def column_bytes(draw: st.DrawFn, oid: int) -> bytes:
    kind = draw(st.sampled_from("ttttttnnub?"))
    if kind == "n":
        return b"n"
    if kind == "u":
        return b"u"
    if kind == "?":
        return bytes([draw(st.integers(min_value=0, max_value=255))])
    text = draw(TEXTS[oid]).encode("utf-8", "surrogatepass")
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        text = b"\xff" + text  # not UTF-8
    return kind.encode() + struct.pack("!I", len(text)) + text


@st.composite
def inserts(draw: st.DrawFn, cols: list[tuple[str, int, bool]]) -> bytes:
    values = [draw(column_bytes(oid)) for _, oid, _ in cols]
    count = len(values)
    if draw(st.integers(min_value=0, max_value=15)) == 0:
        count = draw(st.integers(min_value=0, max_value=8))  # a count that is not the relation's
    relid = RELID if draw(st.integers(min_value=0, max_value=30)) else RELID + 1
    tag = b"N" if draw(st.integers(min_value=0, max_value=30)) else b"K"
    payload = b"I" + struct.pack("!I", relid) + tag + struct.pack("!H", count) + b"".join(values)
    cut = draw(st.integers(min_value=0, max_value=12))
    if cut == 1:
        payload = payload[: draw(st.integers(min_value=1, max_value=len(payload)))]
    elif cut == 2:
        payload += draw(st.binary(min_size=1, max_size=4))
    return payload


BEGIN = b'B\x00\x00\x00\x00\x01Q\x94\xa8\x00\x03\x04+\xa4"\x9a\xb8\x00\x00\x02\xd7'


def _assembler() -> PgChangeAssembler:
    return PgChangeAssembler(lambda relid: RelationCatalog(("b",), frozenset()), lambda oid: None)


def _outcome(fn: Any) -> tuple[str, Any]:
    try:
        return "ok", fn()
    except Exception as exc:
        return "error", (type(exc), str(exc))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_feed_payload_equals_the_reference_path(data: st.DataObject) -> None:
    cols, ident = data.draw(relations())
    rel = relation_payload(cols, ident)
    fast, ref = _assembler(), _assembler()
    for a in (fast, ref):
        a.feed(decode(rel))
        a.feed(decode(BEGIN))
    for _ in range(3):
        payload = data.draw(inserts(cols))
        got = _outcome(lambda p=payload: fast.feed_payload(p))  # type: ignore[misc]
        want = _outcome(lambda p=payload: ref.feed(decode(p)))  # type: ignore[misc]
        # repr: NaN is not equal to itself, and float and Decimal reprs tell -0.0, 1.50 … apart
        assert repr(got) == repr(want)
        if got[0] == "ok" and got[1] is not None:
            assert type(got[1]) is type(want[1])
            assert [type(v) for v in got[1].after.values()] == [type(v) for v in want[1].after.values()]
        assert fast._rows == ref._rows


def test_feed_payload_outside_a_transaction_and_while_skipping() -> None:
    cols = [("a", 20, True), ("b", 25, False)]
    rel = relation_payload(cols, "d")
    ins = b"I" + struct.pack("!I", RELID) + b"N\x00\x02" + b"t\x00\x00\x00\x011" + b"t\x00\x00\x00\x01x"
    a = _assembler()
    a.feed_payload(rel)
    with pytest.raises(ValueError, match="outside a transaction"):
        a.feed_payload(ins)
    a.skip_through = 1 << 62
    a.feed_payload(BEGIN)
    assert a.feed_payload(ins) is None


def test_compiled_reader_refuses_what_it_does_not_handle() -> None:
    read = compile_insert(["a", "b"], [int, bytes.decode], ["a"])
    ok = b"I\x00\x00\x00\x01N\x00\x02" + b"t\x00\x00\x00\x0212" + b"n"
    assert read(ok) == ({"a": 12, "b": None}, (12,))
    for bad in (ok[:-1], ok + b"n", ok.replace(b"n", b"u"), ok.replace(b"\x00\x02t", b"\x00\x03t"), ok[:10]):
        with pytest.raises((Refused, IndexError, ValueError, struct.error)):
            read(bad)


@st.composite
def streams(draw: st.DrawFn) -> list[bytes]:
    """Begin/Insert/Commit payloads in any order (with bad ones): the assembler's state machine."""
    out = []
    for _ in range(draw(st.integers(min_value=1, max_value=12))):
        kind = draw(st.sampled_from("BBCCII?"))
        lsn = draw(st.integers(min_value=0, max_value=2**64 - 1) | st.integers(min_value=0, max_value=50))
        ts = draw(st.integers(min_value=-(2**63), max_value=2**63 - 1))
        if kind == "B":
            p = b"B" + struct.pack("!QqI", lsn, ts, draw(st.integers(min_value=0, max_value=2**32 - 1)))
        elif kind == "C":
            end = draw(st.integers(min_value=0, max_value=2**64 - 1))
            p = b"C" + struct.pack("!BQQq", draw(st.integers(min_value=0, max_value=255)), lsn, end, ts)
        elif kind == "I":
            p = b"I" + struct.pack("!I", RELID) + b"N\x00\x02" + b"t\x00\x00\x00\x011" + b"n"
        else:
            p = draw(st.binary(max_size=30))
        if draw(st.integers(min_value=0, max_value=10)) == 0:
            p = p[:-1] if draw(st.booleans()) else p + b"\x00"
        out.append(p)
    return out


@settings(max_examples=300, deadline=None)
@given(streams(), st.integers(min_value=-1, max_value=60))
def test_feed_payload_keeps_the_state_machine_of_the_reference_path(payloads: list[bytes], skip: int) -> None:
    rel = relation_payload([("a", 20, True), ("b", 25, False)], "d")
    fast, ref = _assembler(), _assembler()
    for a in (fast, ref):
        a.feed(decode(rel))
        a.skip_through = skip
    for p in payloads:
        got = _outcome(lambda p=p: fast.feed_payload(p))  # type: ignore[misc]
        want = _outcome(lambda p=p: ref.feed(decode(p)))  # type: ignore[misc]
        assert repr(got) == repr(want)
        assert (fast.in_transaction, fast.skip_through, fast._rows, fast._skipping) == (
            ref.in_transaction,
            ref.skip_through,
            ref._rows,
            ref._skipping,
        )


@st.composite
def tuple_bytes(draw: st.DrawFn, cols: list[tuple[str, int, bool]], key_only: bool = False) -> bytes:
    """A TupleData for ``cols``: arbitrary columns, or (``key_only``) what PostgreSQL sends as an old
    key — the identity columns' text, NULL for the others."""
    if key_only:
        values = [
            b"t" + struct.pack("!I", len(t)) + t if is_key else b"n"
            for (_, oid, is_key) in cols
            for t in [draw(TEXTS[oid]).encode("utf-8", "surrogatepass")]
        ]
    else:
        values = [draw(column_bytes(oid)) for _, oid, _ in cols]
    count = len(values)
    if draw(st.integers(min_value=0, max_value=20)) == 0:
        count = draw(st.integers(min_value=0, max_value=8))
    return struct.pack("!H", count) + b"".join(values)


@st.composite
def updates_and_deletes(draw: st.DrawFn, cols: list[tuple[str, int, bool]], ident: str) -> bytes:
    relid = RELID if draw(st.integers(min_value=0, max_value=30)) else RELID + 1
    old_tag = draw(st.sampled_from([b"", b"K", b"O"] if ident != "f" else [b"O", b"O", b"", b"K"]))
    if draw(st.integers(min_value=0, max_value=30)) == 0:
        old_tag = draw(st.sampled_from([b"N", b"X", b"n"]))
    old = draw(tuple_bytes(cols, key_only=old_tag == b"K" and draw(st.booleans()))) if old_tag else b""
    if draw(st.booleans()):
        new_tag = b"N" if draw(st.integers(min_value=0, max_value=30)) else draw(st.sampled_from([b"K", b"O", b"t"]))
        payload = b"U" + struct.pack("!I", relid) + old_tag + old + new_tag + draw(tuple_bytes(cols))
    else:
        payload = b"D" + struct.pack("!I", relid) + (old_tag or b"K") + (old or draw(tuple_bytes(cols)))
    cut = draw(st.integers(min_value=0, max_value=12))
    if cut == 1:
        payload = payload[: draw(st.integers(min_value=1, max_value=len(payload)))]
    elif cut == 2:
        payload += draw(st.binary(min_size=1, max_size=4))
    return payload


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_feed_payload_of_updates_and_deletes_equals_the_reference_path(data: st.DataObject) -> None:
    cols, ident = data.draw(relations())
    rel = relation_payload(cols, ident)
    fast, ref = _assembler(), _assembler()
    for a in (fast, ref):
        a.feed(decode(rel))
        a.feed(decode(BEGIN))
    for _ in range(4):
        payload = data.draw(updates_and_deletes(cols, ident))
        got = _outcome(lambda p=payload: fast.feed_payload(p))  # type: ignore[misc]
        want = _outcome(lambda p=payload: ref.feed(decode(p)))  # type: ignore[misc]
        assert repr(got) == repr(want)
        if got[0] == "ok" and got[1] is not None:
            assert type(got[1]) is type(want[1])
            for side in ("before", "after"):
                g, w = getattr(got[1], side), getattr(want[1], side)
                assert (g is None) == (w is None)
                if g is not None:
                    assert list(g) == list(w)  # the same columns in the same order
                    assert [type(v) for v in g.values()] == [type(v) for v in w.values()]
            assert got[1].table == want[1].table
        assert fast._rows == ref._rows
        (fr,), (rr,) = fast._rels.values(), ref._rels.values()
        assert (fr.marked, fr.marker) == (rr.marked, rr.marker)


def test_compiled_tuple_reader_reads_unchanged_columns_and_refuses_the_rest() -> None:
    read = compile_tuple(["a", "b", "c"], [int, bytes.decode, bytes.decode])
    ok = b"\x00\x03" + b"t\x00\x00\x00\x0212" + b"u" + b"n"
    assert read(b"xx" + ok, 2) == ({"a": 12, "b": None, "c": None}, ["b"], 2 + len(ok))
    assert read(ok.replace(b"u", b"n"), 0) == ({"a": 12, "b": None, "c": None}, None, len(ok))
    for bad in (ok[:-1], ok.replace(b"u", b"b"), ok.replace(b"\x00\x03t", b"\x00\x02t"), ok[:5]):
        with pytest.raises((Refused, IndexError, ValueError, struct.error)):
            read(bad, 0)
