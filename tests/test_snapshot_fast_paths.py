"""The snapshot fast paths against their reference paths, on generated data (bad input included).

* frames → fields (:func:`frame_fields`, what :func:`iter_frames` and the subscriber's page decoding
  read): the same events, or the same error, as a plain decoder written from the documented layout;
* a page decoded in one pass (:meth:`EventDecoder.decode_frames`, ``decode_fields``) equals the
  events decoded one by one the way the subscriber did before (``RowCodec.decode_reference``, the
  dataclass's own constructor), with the same errors;
* the cheaper constructor of :class:`Event`/:class:`ChangeEvent` makes ordinary frozen instances;
* :meth:`Store.snapshot_frames` and ``read_page`` serve what :meth:`Store.snapshot_page` and the
  per-row loop they replace served.
"""

from __future__ import annotations

import dataclasses
import random
import struct
import types
import zlib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_avrofast import _same, tables, values

from headrace._frozen import fast_constructor
from headrace.bootstrap import RowOp, Store, sort_key
from headrace.bootstrap._serve_snapshot import encode_cursor, read_page
from headrace.errors import InvalidInput
from headrace.relay import Event, Op, SchemaRegistry, SchemaVersion, encode_event, encode_key, iter_frames
from headrace.relay._event import decode_event, decode_key, frame_fields, with_window_end
from headrace.relay._filter import parse_filter
from headrace.relay._schema import UNCHANGED_MARKER, UNREPRESENTABLE_MARKER
from headrace.relay.client import ChangeEvent, EventDecoder
from headrace.relay.client._decode import _new_change_event

_HEAD = struct.Struct(">IBcBBQq8sHIII")


def reference_frames(body: bytes) -> list[Event]:
    """Frames decoded straight from the layout in ``relay/_event.py``'s docstring."""
    out = []
    off = 0
    while off < len(body):
        if len(body) - off < _HEAD.size:
            raise InvalidInput("truncated", "")
        n, version, op, flags, _r, scn, ts, fp, sl, kl, bl, al = _HEAD.unpack_from(body, off)
        if version != 1:
            raise InvalidInput("bad_version", "")
        if n != _HEAD.size - 4 + sl + kl + bl + al + 4:
            raise InvalidInput("bad_frame", "")
        if len(body) - off < 4 + n:
            raise InvalidInput("truncated", "")
        end = off + 4 + n
        if zlib.crc32(body[off + 4 : end - 4]) != struct.unpack_from(">I", body, end - 4)[0]:
            raise InvalidInput("bad_crc", "")
        p = off + _HEAD.size
        source = body[p : p + sl].decode()
        key = body[p + sl : p + sl + kl]
        before = body[p + sl + kl : p + sl + kl + bl] if flags & 2 else None
        after = body[p + sl + kl + bl : p + sl + kl + bl + al] if flags & 4 else None
        if op not in {o.value.encode() for o in Op}:
            raise InvalidInput("bad_op", "")
        out.append(Event(scn, source, Op(op.decode()), key, ts, fp.hex(), before, after, bool(flags & 1)))
        off = end
    return out


def outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except InvalidInput as exc:
        return "InvalidInput", exc.reason
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        return type(exc).__name__, None


events = st.builds(
    Event,
    scn=st.integers(0, 2**64 - 1),
    source=st.sampled_from(["t", "accounts", "é x"]) | st.text(min_size=1, max_size=12),
    op=st.sampled_from(list(Op)),
    key=st.sampled_from([b"[1]", b"[-7]", b'["a"]', b"[]"]) | st.binary(max_size=20),
    ts_ms=st.integers(-(2**63), 2**63 - 1),
    fingerprint=st.sampled_from(["0123456789abcdef", "ffffffffffffffff"])
    | st.binary(min_size=8, max_size=8).map(bytes.hex),
    before=st.none() | st.binary(max_size=40),
    after=st.none() | st.binary(max_size=40),
    window_end=st.booleans(),
)


@st.composite
def damaged(draw: st.DrawFn, body: bytes) -> bytes:
    """``body`` as it is, cut, with a flipped bit, or with garbage appended."""
    how = draw(st.sampled_from(["as is", "cut", "flip", "append"]))
    if how == "cut" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if how == "flip" and body:
        b = bytearray(body)
        b[draw(st.integers(0, len(b) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(b)
    if how == "append":
        return body + draw(st.binary(min_size=1, max_size=60))
    return body


@settings(max_examples=300, deadline=None)
@given(st.lists(events, max_size=8), st.data())
def test_frame_fields_read_what_the_layout_says(evs: list[Event], data: st.DataObject) -> None:
    body = data.draw(damaged(b"".join(encode_event(e) for e in evs)))
    want = outcome(reference_frames, body)
    assert outcome(lambda b: list(iter_frames(b)), body) == want
    assert outcome(lambda b: list(iter_frames(memoryview(b))), body) == want
    assert outcome(lambda b: [Event(*f) for f in frame_fields(b)], body) == want
    if want[0] == "ok" and want[1]:
        e, end = decode_event(body)
        assert e == want[1][0] and end == len(encode_event(want[1][0]))


def test_the_fast_constructors_make_ordinary_frozen_instances() -> None:
    make_event = fast_constructor(Event)
    assert make_event is not Event  # the fast path is taken on this interpreter
    fields = (5, "t", Op.READ, b"[1]", 7, "00" * 8, None, b"x", True)
    e = make_event(*fields)
    assert type(e) is Event and e == Event(*fields) and repr(e) == repr(Event(*fields))
    assert hash(e) == hash(Event(*fields))
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.scn = 6  # type: ignore[misc]
    ce = _new_change_event(1, "t", Op.READ, [1], None, {"a": 1}, 0, True, "00" * 8, 1, False, (), ())
    assert type(ce) is ChangeEvent and ce == ChangeEvent(1, "t", Op.READ, [1], None, {"a": 1}, 0, True, "00" * 8, 1)
    assert dataclasses.replace(ce, scn=2).scn == 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        ce.table = "u"  # type: ignore[misc]


def reference_decode(versions: dict[str, SchemaVersion], seen: dict[str, str], e: Event) -> ChangeEvent:
    """The subscriber's decoding one event at a time, as it was before pages were decoded in one pass."""
    from headrace.relay import RowCodec

    c = RowCodec(versions[e.fingerprint])
    last = seen.get(e.source)
    seen[e.source] = e.fingerprint
    before = None if e.before is None else c.decode_reference(e.before)
    after = None if e.after is None else c.decode_reference(e.after)
    unchanged: tuple[str, ...] = ()
    unrepresentable: tuple[str, ...] = ()
    marker = c.markers.get(UNCHANGED_MARKER)
    if marker is not None:
        unchanged = tuple((after or {}).pop(marker, None) or ())
        if before is not None:
            before.pop(marker, None)
    marker = c.markers.get(UNREPRESENTABLE_MARKER)
    if marker is not None:
        nulled = [*((before or {}).pop(marker, None) or ()), *((after or {}).pop(marker, None) or ())]
        unrepresentable = tuple(dict.fromkeys(nulled))
    return ChangeEvent(
        scn=e.scn,
        table=e.source,
        op=e.op,
        key=decode_key(e.key),
        before=before,
        after=after,
        ts_ms=e.ts_ms,
        window_end=e.window_end,
        fingerprint=e.fingerprint,
        schema_version=c.version.version,
        schema_changed=last is not None and last != e.fingerprint,
        unchanged=unchanged,
        unrepresentable=unrepresentable,
    )


def same_events(a: list[ChangeEvent], b: list[ChangeEvent]) -> bool:
    return len(a) == len(b) and all(
        type(x) is type(y) is ChangeEvent
        and all(_same(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(ChangeEvent))
        for x, y in zip(a, b, strict=True)
    )


def decode_outcome(f: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", f(*args)
    except InvalidInput as exc:
        return "InvalidInput", exc.reason
    except Exception as exc:  # whatever the reference raises, the fast path must raise too
        return type(exc).__name__, None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(metas=st.lists(tables(), min_size=1, max_size=2), data=st.data())
def test_a_page_decoded_in_one_pass_equals_events_decoded_one_by_one(metas: list[Any], data: st.DataObject) -> None:
    from headrace.relay import RowCodec

    versions: dict[str, SchemaVersion] = {}
    evs: list[Event] = []
    for i, meta in enumerate(metas):
        sv = SchemaRegistry().register(dataclasses.replace(meta, name=f"t{i % 2}"))
        versions[sv.fingerprint] = sv
        codec = RowCodec(sv)
        for _ in range(data.draw(st.integers(1, 4))):
            row = {c.name: data.draw(st.none() | values(c.type)) for c in meta.columns}
            try:
                after = codec.encode(row)
            except Exception:  # a row the codec refuses is not what a server sends
                continue
            if data.draw(st.integers(0, 5)) == 0:  # a payload that is not this schema's bytes
                after = data.draw(st.binary(max_size=30))
            key = encode_key([data.draw(st.integers(-(2**40), 2**40))]) if data.draw(st.booleans()) else b'["k"]'
            before = after if data.draw(st.integers(0, 3)) == 0 else None
            op = data.draw(st.sampled_from([Op.READ, Op.UPDATE, Op.DELETE]))
            evs.append(Event(len(evs) + 1, sv.table, op, key, 1000, sv.fingerprint, before, after))
    if not evs:
        return
    evs[-1] = dataclasses.replace(evs[-1], window_end=True)
    body = data.draw(damaged(b"".join(encode_event(e) for e in evs)))

    def fetch(fp: str) -> SchemaVersion:
        return versions[fp]

    def reference(b: bytes) -> list[ChangeEvent]:
        parsed = reference_frames(b)
        if parsed and not parsed[-1].window_end:
            raise InvalidInput("partial_window", "")
        seen: dict[str, str] = {}
        return [reference_decode(versions, seen, e) for e in parsed]

    want = decode_outcome(reference, body)
    got = decode_outcome(EventDecoder(fetch).decode_frames, body)
    assert got[0] == want[0], (got, want)
    if want[0] == "ok":
        assert same_events(got[1], want[1])
        one_by_one = EventDecoder(fetch)
        assert same_events([one_by_one.decode(e) for e in iter_frames(body)], want[1])
        assert same_events(EventDecoder(fetch).decode_many(list(iter_frames(body))), want[1])
    else:
        assert got == want


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(-50, 50)), max_size=40, unique=True),
    limit=st.integers(1, 15),
    cursor=st.none() | st.tuples(st.sampled_from(["a", "b", "c", "0", "z"]), st.integers(-60, 60)),
    asked=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, unique=True),
    flt=st.sampled_from([None, "mod:2:0", "mod:3:1"]),
)
def test_snapshot_frames_and_read_page_serve_what_snapshot_page_served(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[str, int]],
    limit: int,
    cursor: tuple[str, int] | None,
    asked: list[str],
    flt: str | None,
) -> None:
    store = Store(f"sqlite:///{tmp_path_factory.mktemp('s') / 'b.db'}")
    try:
        store.init_positions(0)
        rng = random.Random(len(rows))
        ops = []
        for src, k in rows:
            key = encode_key([k])
            ev = Event(5, src, Op.READ, key, 0, "00" * 8, None, rng.randbytes(rng.randint(0, 9)))
            ops.append(RowOp(src, sort_key(key), 5, encode_event(ev)))
        store.apply(ops, 5)
        after = None if cursor is None else (cursor[0], sort_key(encode_key([cursor[1]])))
        page, state = store.snapshot_page(asked, after, limit)
        frames, last, state2 = store.snapshot_frames(asked, after, limit)
        assert frames == [f for _s, _k, f in page]
        assert last == ((page[-1][0], page[-1][1]) if page else None)
        assert state == state2
        # read_page as it was: one loop over the page's rows
        f = parse_filter(flt, frozenset(asked))
        from headrace.relay._event import peek_header

        kept = [fr for _s, _k, fr in page if not f.per_event or f.matches(peek_header(fr))]
        if kept:
            kept[-1] = with_window_end(kept[-1])
        want_cursor = encode_cursor(page[-1][0], page[-1][1], state["gen"]) if page else None
        st_ = types.SimpleNamespace(store=store)
        body, _state, got_cursor, done, count = read_page(
            st_,
            sorted(asked),
            None if after is None else (*after, state["gen"]),
            limit,
            f,  # type: ignore[arg-type]
        )
        assert (body, got_cursor, done, count) == (b"".join(kept), want_cursor, len(page) < limit, len(kept))
    finally:
        store.close()
