"""Micro-benchmark: a relay response body → the subscriber's ``ChangeEvent``s, CPU-µs per event.

Not one of ``python -m bench``'s benchmarks (no peer, no README row, writes nothing): it measures the
client library's decoding alone, in one process, as CPU time (``time.process_time``), so that it can
be compared A/B on a loaded machine. Bodies are built with the relay's own encoder
(:func:`~headrace.relay._codec.encode_window`) from rows of three shapes:

* ``bench``: the relay PostgreSQL benchmark's table (id bigint, payload text(64), amount float8,
  t_commit float8), 5 rows a window;
* ``pg``: the same with amount numeric and t_commit timestamptz (PostgreSQL's own types);
* ``wide``: one row of many kinds (ints, floats, text, bytes, decimals with and without precision,
  dates, times, timestamps, UUID, JSON, interval, array, nullable columns, a NULL).

Paths measured (``--paths``): ``stream`` is what :meth:`Subscriber._decode_batch` does with a
``/v1/stream`` body (frames → windows of :class:`Event` → ``decode_many`` per window); ``page`` is a
snapshot page (``decode_frames``: frames → fields → events in one pass); ``body`` is
:meth:`EventDecoder.decode_body` (frames → events straight, when it exists).

    PYTHONPATH=$PWD:$PWD/tests python bench/client_decode.py --events 50000 --repeat 5
"""

from __future__ import annotations

import argparse
import datetime as dt
import decimal
import gc
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from headrace.relay import Column, ColumnType, Op, SchemaRegistry, TableMeta
from headrace.relay._codec import Codecs, encode_window
from headrace.relay._event import decode_windows
from headrace.relay._values import Interval
from headrace.relay.client import EventDecoder
from headrace.relay.sources._base import ChangeWindow, RowChange


def _bench_table() -> tuple[TableMeta, Callable[[int], dict[str, Any]]]:
    cols = (
        Column("id", ColumnType("long"), False),
        Column("payload", ColumnType("string")),
        Column("amount", ColumnType("double")),
        Column("t_commit", ColumnType("double")),
    )
    meta = TableMeta("public.events", cols, ("id",))
    return meta, lambda i: {"id": i, "payload": "x" * 64, "amount": i * 0.5, "t_commit": 1.7e9 + i / 1000}


def _pg_table() -> tuple[TableMeta, Callable[[int], dict[str, Any]]]:
    cols = (
        Column("id", ColumnType("long"), False),
        Column("payload", ColumnType("string")),
        Column("amount", ColumnType("decimal")),
        Column("t_commit", ColumnType("timestamptz", text_fallback=True)),
    )
    meta = TableMeta("public.events", cols, ("id",))
    t0 = dt.datetime(2026, 12, 7, 6, 0, tzinfo=dt.UTC)

    def row(i: int) -> dict[str, Any]:
        return {"id": i, "payload": "x" * 64, "amount": f"{i * 0.5}", "t_commit": t0 + dt.timedelta(microseconds=i)}

    return meta, row


def _wide_table() -> tuple[TableMeta, Callable[[int], dict[str, Any]]]:
    kinds: list[tuple[str, ColumnType, bool]] = [
        ("id", ColumnType("long"), False),
        ("i", ColumnType("int"), True),
        ("flag", ColumnType("boolean"), True),
        ("r", ColumnType("float"), True),
        ("d", ColumnType("double"), True),
        ("name", ColumnType("string"), True),
        ("blob", ColumnType("bytes"), True),
        ("price", ColumnType("decimal", precision=12, scale=2, text_fallback=True), True),
        ("n", ColumnType("decimal"), True),
        ("day", ColumnType("date", text_fallback=True), True),
        ("at", ColumnType("time", text_fallback=True), True),
        ("ts", ColumnType("timestamp", text_fallback=True), True),
        ("tstz", ColumnType("timestamptz", text_fallback=True), True),
        ("u", ColumnType("uuid"), True),
        ("doc", ColumnType("json"), True),
        ("span", ColumnType("interval"), True),
        ("tags", ColumnType("array", items=ColumnType("string"), text_fallback=True), True),
        ("missing", ColumnType("string"), True),
    ]
    meta = TableMeta("public.wide", tuple(Column(n, t, nullable) for n, t, nullable in kinds), ("id",))
    t0 = dt.datetime(2026, 12, 7, 6, 0)

    def row(i: int) -> dict[str, Any]:
        return {
            "id": i,
            "i": i % 1000,
            "flag": i % 2 == 0,
            "r": 1.5,
            "d": i / 3,
            "name": f"name {i}",
            "blob": b"\x00\x01" * 8,
            "price": decimal.Decimal(i) / 4,
            "n": str(i * 7),
            "day": t0.date(),
            "at": dt.time(12, 30, 5, 123),
            "ts": t0 + dt.timedelta(seconds=i),
            "tstz": (t0 + dt.timedelta(seconds=i)).replace(tzinfo=dt.UTC),
            "u": uuid.UUID(int=i),
            "doc": '{"a": 1, "b": [1, 2]}',
            "span": Interval(0, 1, 3_600_000_000),
            "tags": ["a", "b", None],
            "missing": None,
        }

    return meta, row


SHAPES = {"bench": _bench_table, "pg": _pg_table, "wide": _wide_table}


def build_body(shape: str, events: int, per_window: int = 5) -> tuple[bytes, SchemaRegistry]:
    """A stream body of ``events`` inserts in windows of ``per_window``, encoded by the relay's encoder."""
    meta, row = SHAPES[shape]()
    reg = SchemaRegistry()
    codecs = Codecs(reg)
    parts = []
    for w in range(0, events, per_window):
        changes = [
            RowChange(i + 1, meta, Op.INSERT, (i,), None, row(i), None) for i in range(w, min(events, w + per_window))
        ]
        enc = encode_window(ChangeWindow(changes[-1].scn, 1_765_000_000_000 + w, iter(changes)), codecs)
        assert enc is not None
        parts.append(enc.data)
    return b"".join(parts), reg


def _paths(body: bytes, reg: SchemaRegistry) -> dict[str, Callable[[], int]]:
    def fetch(fp: str) -> Any:
        return reg.get(fp)

    def stream() -> int:
        d = EventDecoder(fetch)
        windows = [d.decode_many(w) for w in decode_windows(body)]  # kept, as the subscriber keeps a batch
        return sum(map(len, windows))

    def page() -> int:
        return len(EventDecoder(fetch).decode_frames(body))

    out = {"stream": stream, "page": page}
    if hasattr(EventDecoder, "decode_body"):

        def whole() -> int:
            return sum(map(len, EventDecoder(fetch).decode_body(body)))

        out["body"] = whole
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--shapes", default="bench,pg,wide")
    ap.add_argument("--paths", default="stream,page,body")
    ap.add_argument("--no-gc", action="store_true", help="measure with the garbage collector off")
    args = ap.parse_args()
    result: dict[str, Any] = {}
    for shape in args.shapes.split(","):
        body, reg = build_body(shape, args.events)
        paths = _paths(body, reg)
        for name in args.paths.split(","):
            fn = paths.get(name)
            if fn is None:
                continue
            fn()  # warm: schemas fetched, readers compiled
            us = []
            for _ in range(args.repeat):
                gc.collect()
                if args.no_gc:
                    gc.disable()
                t = time.process_time()
                n = fn()
                us.append((time.process_time() - t) / n * 1e6)
                gc.enable()
            result[f"{shape}/{name}"] = {
                "cpu_us_per_event": [round(x, 3) for x in sorted(us)],
                "events_per_cpu_s": round(1e6 / min(us)),
                "body_bytes_per_event": round(len(body) / args.events, 1),
            }
            print(shape, name, "CPU-µs/event min", round(min(us), 3), "max", round(max(us), 3), flush=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
