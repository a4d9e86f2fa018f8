"""The client's one-pass body decoding equals the reference path, on generated bodies (bad ones included).

* :func:`~headrace.relay._avrofast.compile_reader` with ``at=True`` (a row read in place inside a
  larger buffer) gives exactly what the plain compiled reader gives for the row's bytes, and succeeds
  exactly when it succeeds, whatever bytes surround the row (cut and garbage rows included);
* :meth:`EventDecoder.decode_body` (a ``/v1/stream`` body straight into windows of
  :class:`ChangeEvent`, events at or below ``since`` left out) and :meth:`EventDecoder.decode_frames`
  (a snapshot page) give the events, or the error, of the reference path — every frame parsed from
  the documented layout first (:func:`reference_frames`), a partial window refused, then each event
  decoded the way the subscriber did before (:func:`reference_decode`: fastavro's reader, the
  dataclass's own constructor) — over tables of every column kind the relay emits, with schema
  changes, unchanged/unrepresentable marker columns, TRUNCATE, keys of every form (and bad ones),
  payloads that are not the schema's bytes, and damaged bodies (cut, a flipped bit, garbage after);
* the decoder's state (schemas, the schema each table was last seen in) carries over between calls
  and between its methods as it does in the reference.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_avrofast import _same, tables, values
from test_snapshot_fast_paths import damaged, decode_outcome, reference_decode, reference_frames, same_events

from headrace.errors import InvalidInput
from headrace.relay import Event, Op, RowCodec, SchemaRegistry, SchemaVersion, TableMeta, encode_event, encode_key
from headrace.relay._avrofast import compile_reader
from headrace.relay._event import decode_windows, iter_frames
from headrace.relay.client import ChangeEvent, EventDecoder

SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

KEYS = st.one_of(
    st.integers(-(2**70), 2**70).map(lambda i: encode_key([i])),
    st.sampled_from([b"[0]", b"[7]", b"[-0]", b"[01]", b"[1_0]", b"[ 1]", b"[+1]", b"[1.0]", b"[]", b'["k"]']),
    st.sampled_from([b"[", b"]", b"[]]", b"{}", b"", b"1", b'[1,"a"]', b"[\xff]", b"[\xd9\xa3]"]),
    st.lists(st.integers() | st.text(max_size=3) | st.none(), max_size=3).map(encode_key),
    st.binary(max_size=8),
)


def _fields(meta: TableMeta) -> list[tuple[str, Any, str, Any]]:
    codec = RowCodec(SchemaRegistry().register(meta))
    assert codec._reader_fields is not None
    return codec._reader_fields


@SETTINGS
@given(meta=tables(), data=st.data())
def test_reader_at_an_offset_reads_what_the_reader_reads(meta: TableMeta, data: st.DataObject) -> None:
    codec = RowCodec(SchemaRegistry().register(meta))
    plain, at = codec._fast_decode, codec.reader_at()
    assert plain is not None and at is not None and at is codec.reader_at()
    for _ in range(4):
        row = {c.name: data.draw(st.none() | values(c.type)) for c in meta.columns}
        try:
            enc = codec.encode(row)
        except Exception:
            enc = data.draw(st.binary(max_size=30))
        how = data.draw(st.sampled_from(["as is", "as is", "cut", "longer", "garbage"]))
        if how == "cut" and enc:
            enc = enc[: data.draw(st.integers(0, len(enc) - 1))]
        elif how == "longer":
            enc += data.draw(st.binary(min_size=1, max_size=4))
        elif how == "garbage":
            enc = data.draw(st.binary(max_size=40))
        before, after = data.draw(st.binary(max_size=6)), data.draw(st.binary(max_size=40))
        buf = before + enc + after
        try:
            want: tuple[str, Any] = ("ok", plain(enc))
        except Exception:
            want = ("error", None)
        try:
            got: tuple[str, Any] = ("ok", at(buf, len(before), len(before) + len(enc)))
        except Exception:
            got = ("error", None)
        assert got[0] == want[0] and (got[0] != "ok" or _same(got[1], want[1])), (enc, buf)
        if want[0] == "ok":  # and both are what fastavro reads
            assert _same(got[1], codec.decode_reference(enc))


def test_a_reader_schema_has_no_reader_at() -> None:
    from headrace.relay import Column, ColumnType

    meta = TableMeta("t", (Column("id", ColumnType("long"), False),), ("id",))
    sv = SchemaRegistry().register(meta)
    assert RowCodec(sv, sv.schema).reader_at() is None
    assert compile_reader(_fields(meta), at=True)(b"xx\x04yy", 2, 3) == {"id": 2}


# -- bodies ----------------------------------------------------------------------------------------


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, SchemaVersion], list[Event]]:
    """A body of frames over 1–2 tables, each in 1–2 schema versions (a schema change between them),
    with every operation, keys of every form and some payloads that are not the schema's bytes; the
    last frame usually ends a window. Returns the body, the schemas by fingerprint, and the events."""
    versions: dict[str, SchemaVersion] = {}
    schemas: list[tuple[SchemaVersion, RowCodec, TableMeta]] = []
    reg = SchemaRegistry()
    for name in draw(st.lists(st.sampled_from(["t", "s.u", "é"]), min_size=1, max_size=2, unique=True)):
        for meta in draw(st.lists(tables(), min_size=1, max_size=2)):
            sv = reg.register(dataclasses.replace(meta, name=name))
            versions[sv.fingerprint] = sv
            schemas.append((sv, RowCodec(sv), meta))
    evs: list[Event] = []
    for _ in range(draw(st.integers(1, 8))):
        sv, codec, meta = draw(st.sampled_from(schemas))
        op = draw(st.sampled_from(list(Op)))

        def payload(codec: RowCodec = codec, meta: TableMeta = meta) -> bytes:
            if draw(st.integers(0, 6)) == 0:  # not this schema's bytes
                return draw(st.binary(max_size=30))
            row = {c.name: draw(st.none() | values(c.type)) for c in meta.columns}
            try:
                return codec.encode(row)
            except Exception:  # a row the codec refuses is not what a relay sends: some bytes instead
                return draw(st.binary(max_size=30))

        if op is Op.TRUNCATE:
            key, before, after = b"[]", None, None
        else:
            key = draw(KEYS)
            before = payload() if op in (Op.UPDATE, Op.DELETE) and draw(st.booleans()) else None
            after = payload() if op is not Op.DELETE else None
        ts = draw(st.integers(-(2**63), 2**63 - 1) | st.just(1_765_000_000_000))
        scn = len(evs) + draw(st.integers(0, 2))  # not always increasing by one: since falls between
        evs.append(Event(scn, sv.table, op, key, ts, sv.fingerprint, before, after, draw(st.booleans())))
    if draw(st.integers(0, 4)):
        evs[-1] = dataclasses.replace(evs[-1], window_end=True)
    return b"".join(encode_event(e) for e in evs), versions, evs


def reference_windows(
    versions: dict[str, SchemaVersion], seen: dict[str, str], body: bytes, since: int | None
) -> list[list[ChangeEvent]]:
    """Every frame parsed first, whole windows required, then the events above ``since`` decoded one by
    one (the subscriber's reference path); empty windows dropped."""
    windows: list[list[Event]] = [[]]
    for e in reference_frames(body):
        windows[-1].append(e)
        if e.window_end:
            windows.append([])
    if windows[-1]:
        raise InvalidInput("partial_window", "")
    out = []
    for w in windows:
        fresh = [reference_decode(versions, seen, e) for e in w if since is None or e.scn > since]
        if fresh:
            out.append(fresh)
    return out


def _same_windows(a: list[list[ChangeEvent]], b: list[list[ChangeEvent]]) -> bool:
    return len(a) == len(b) and all(same_events(x, y) for x, y in zip(a, b, strict=True))


@settings(parent=SETTINGS, max_examples=300)
@given(gen=bodies(), data=st.data())
def test_decode_body_equals_the_reference(gen: Any, data: st.DataObject) -> None:
    body, versions, evs = gen
    body = data.draw(damaged(body))
    since = data.draw(st.none() | st.integers(-1, len(evs) + 3))

    want = decode_outcome(reference_windows, versions, {}, body, since)
    got = decode_outcome(EventDecoder(versions.__getitem__).decode_body, body, since)
    assert got[0] == want[0], (got, want)
    if want[0] == "ok":
        assert _same_windows(got[1], want[1])
    else:
        assert got == want

    # a snapshot page: every event, one flat list
    flat = decode_outcome(reference_windows, versions, {}, body, None)
    page = decode_outcome(EventDecoder(versions.__getitem__).decode_frames, body)
    assert page[0] == flat[0], (page, flat)
    if flat[0] == "ok":
        assert same_events(page[1], [e for w in flat[1] for e in w])
        # and the Event path (frames → events → decode_many per window) gives them too
        d = EventDecoder(versions.__getitem__)
        assert _same_windows([d.decode_many(w) for w in decode_windows(body)], flat[1])
    else:
        assert page == flat


@settings(parent=SETTINGS, max_examples=150)
@given(gen=bodies(), gen2=bodies(), data=st.data())
def test_the_decoder_state_carries_over_between_calls_and_methods(gen: Any, gen2: Any, data: st.DataObject) -> None:
    """schema_changed and the cached schemas follow one decoder through bodies, pages and events."""
    (b1, v1, _e1), (b2, v2, _e2) = gen, gen2
    versions = {**v1, **v2}
    seen: dict[str, str] = {}
    d = EventDecoder(versions.__getitem__)
    for body in (b1, b2, b1):
        how = data.draw(st.sampled_from(["body", "frames", "many", "fields"]))
        want = decode_outcome(reference_windows, versions, seen, body, None)
        if how == "body":
            got = decode_outcome(d.decode_body, body)
        elif how == "frames":
            got = decode_outcome(lambda b: [d.decode_frames(b)] if b else [], body)
        elif how == "many":
            got = decode_outcome(lambda b: [d.decode_many(list(iter_frames(b)))] if b else [], body)
        else:
            from headrace.relay._event import frame_fields

            got = decode_outcome(lambda b: [d.decode_fields(list(frame_fields(b)))] if b else [], body)
        if want[0] != "ok":
            return  # after an error the two may have gone different lengths: stop comparing
        assert got[0] == "ok", got
        flat_want = [e for w in want[1] for e in w]
        flat_got = [e for w in got[1] for e in w]
        assert same_events(flat_got, flat_want)


def test_decode_body_groups_windows_and_leaves_out_old_events() -> None:
    from headrace.relay import Column, ColumnType

    meta = TableMeta("t", (Column("id", ColumnType("long"), False), Column("s", ColumnType("string"))), ("id",))
    sv = SchemaRegistry().register(meta)
    codec = RowCodec(sv)
    evs = [
        Event(i, "t", Op.INSERT, encode_key([i]), 5, sv.fingerprint, None, codec.encode({"id": i, "s": "x"}), end)
        for i, end in zip(range(1, 6), [False, True, True, False, True], strict=True)
    ]
    body = b"".join(encode_event(e) for e in evs)
    d = EventDecoder(lambda fp: sv)
    windows = d.decode_body(body, since=2)
    assert [[e.scn for e in w] for w in windows] == [[3], [4, 5]]  # the window of 1, 2 is left out
    assert windows[1][1] == ChangeEvent(5, "t", Op.INSERT, [5], None, {"id": 5, "s": "x"}, 5, True, sv.fingerprint, 1)
    assert [[e.scn for e in w] for w in d.decode_body(body)] == [[1, 2], [3], [4, 5]]
    try:
        d.decode_body(body[: -len(encode_event(evs[-1]))])
    except InvalidInput as exc:
        assert exc.reason == "partial_window" and "after SCN 4" in str(exc)
    else:
        raise AssertionError("a body ending inside a window must be refused")


# -- the subscriber --------------------------------------------------------------------------------


class _CorruptingProxy:
    """A real HTTP server in front of a relay that flips a byte in every other non-empty ``/v1/stream``
    body (the rest it forwards as it is)."""

    def __init__(self, upstream: str) -> None:
        import http.server
        import threading

        import httpx

        proxy = self
        self.flipped = 0
        self._n = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                r = httpx.get(upstream + self.path, timeout=30)
                body = r.content
                if self.path.startswith("/v1/stream") and body:
                    proxy._n += 1
                    if proxy._n % 2:
                        b = bytearray(body)
                        b[len(b) // 2] ^= 0x10
                        body = bytes(b)
                        proxy.flipped += 1
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_the_subscriber_decodes_bodies_like_the_event_path_and_fails_over_a_corrupt_one(
    daemons: Any, tmp_path: Any
) -> None:
    """A subscriber's windows (bodies decoded in one pass) equal what fetch's Event windows decode to,
    and the values written; a relay serving a corrupt body is failed over, nothing lost or doubled."""
    import relay_workload as wl
    from relay_support import start_relay, write_workload

    from headrace.relay.client import Subscriber

    db = tmp_path / "app.db"
    wl.create_schema(str(db))
    _relay, url = start_relay(daemons, tmp_path, db)
    assert write_workload(db, seed=11, start=0, count=400).wait(60) == 0
    expected = [e for txn in wl.expected_events(11, 400) for e in txn]

    # the Event path: fetch() gives Event windows (as the bootstrap follower uses it), decoded by decode_many
    ref = Subscriber([url], wait_ms=200, max_bytes=16 << 10)
    by_events: list[ChangeEvent] = []
    while len(by_events) < len(expected):
        batch = ref.fetch()
        assert batch is not None and batch.body is None
        for w in ref._decode_batch(batch) or []:
            by_events.extend(w.events)
            ref.commit(w.scn)
    ref.close()

    proxy = _CorruptingProxy(url)
    try:
        sub = Subscriber([proxy.url, url], wait_ms=200, max_bytes=16 << 10, backoff_max=0.2)
        got: list[ChangeEvent] = []
        for w in sub.windows(idle_exit=30):
            assert w.scn == w.events[-1].scn and w.events[-1].window_end
            got.extend(w.events)
            if len(got) >= len(expected):
                break
        sub.close()
    finally:
        proxy.close()
    assert proxy.flipped >= 1  # the proxy did serve a corrupt body, and it was failed over
    assert same_events(got, by_events)
    assert [(e.table, e.op.value, e.key, e.before, e.after) for e in got] == expected


# -- JSON columns ----------------------------------------------------------------------------------

JSON_TEXTS = st.one_of(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
        max_leaves=6,
    ).map(lambda v: __import__("json").dumps(v)),
    st.sampled_from(["1.50", "1.0000000000000000001", "1e400", "-0.0", " null ", "\ufeff{}", "{", "[1,]", "NaN", ""]),
    st.text(alphabet='{}[]":,.-+0123456789eE nultrfas\\\ufeff', max_size=12),
)


@settings(max_examples=500, deadline=None)
@given(JSON_TEXTS)
def test_a_json_column_decodes_as_json_loads_did(text: str) -> None:
    import json

    from headrace.relay._codec import _json_number, _json_value
    from headrace.relay._values import JSON_NULL

    def reference(t: str) -> Any:
        v = json.loads(t, parse_float=_json_number)
        return JSON_NULL if v is None else v

    def outcome(f: Any) -> tuple[str, Any]:
        try:
            return "ok", f(text)
        except Exception as exc:
            return type(exc).__name__, str(exc)

    got, want = outcome(_json_value), outcome(reference)
    assert got[0] == want[0] and (got == want if got[0] != "ok" else _same(got[1], want[1])), (got, want)


def test_decoding_a_body_leaves_the_garbage_collector_as_it_found_it() -> None:
    import contextlib
    import gc

    from headrace.relay import Column, ColumnType

    meta = TableMeta("t", (Column("id", ColumnType("long"), False),), ("id",))
    sv = SchemaRegistry().register(meta)
    good = encode_event(Event(1, "t", Op.INSERT, b"[1]", 0, sv.fingerprint, None, RowCodec(sv).encode({"id": 1}), True))
    d = EventDecoder(lambda fp: sv)
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            (gc.enable if enabled else gc.disable)()
            seen: list[bool] = []
            d.fetch_schema = lambda fp, seen=seen: seen.append(gc.isenabled()) or sv  # type: ignore[misc]
            d._codecs.clear()
            d._tables.clear()
            d._by_hex.clear()
            assert len(d.decode_body(good)) == 1 and seen == [False]  # paused while decoding
            assert gc.isenabled() is enabled
            for bad in (good[:-1], good + b"x"):
                with contextlib.suppress(InvalidInput):
                    d.decode_frames(bad)
                assert gc.isenabled() is enabled
    finally:
        (gc.enable if was else gc.disable)()
