"""Seeding pages of a PostgreSQL snapshot a column at a time (the fast path of :mod:`._seed_source`).

Theory of operation: the snapshot's reference path parses each page into ``RowChange`` objects
(:meth:`~headrace.relay.sources._pgsnapshot.PgSnapshot.pages`) and encodes each row with the relay's
codec (:func:`._seed_source.read_ops`). Here a page of PostgreSQL's text values is encoded a column at
a time (:class:`~headrace.relay.sources._pgcolumns.PageEncoder`: the same parsers, the same writer
code, fused for the common kinds) into the same keys and Avro bytes, and the ``r`` frames are packed
a page at a time (:func:`._apply.read_frames`), so a seeded row is still byte for byte the stream's
event of the same row.

The next page is fetched (by a thread, :func:`headrace._prefetch.prefetch`) while this one is encoded and stored:
PostgreSQL formats the next rows and the store syncs this page while this process encodes.

A page whose encoding raises anything (a value the writer refuses, a NULL key, …) is encoded by the
reference path instead, which gives the same frames or the reference's own error; the rest of that
table then takes the reference path too (a table that needed it once likely needs it again). Any
snapshot that is not PostgreSQL's, and a :class:`~headrace.relay.Codecs` subclass (one that decides
what an unencodable value becomes), always take the reference path.

Resume-state contract: none of its own (pages are yielded to :mod:`._seed_source`, which stores them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from .._gcpause import gc_paused
from .._logging import get_logger
from .._prefetch import prefetch
from ..relay import Codecs, Op
from ..relay.sources._base import RowChange, SourceSnapshot
from ._apply import RowOp, read_frames, sort_key

__all__ = ["ENABLED", "fast_page_ops", "page_ops"]

log = get_logger("bootstrap.seed")

#: whether PostgreSQL pages take the column-at-a-time path (False: always the reference path)
ENABLED = True

_I64 = 1 << 63

#: (scn, rows read, the page's store operations)
PageOps = tuple[int, int, list[RowOp]]


def page_ops(snap: SourceSnapshot, table: str, codecs: Codecs, page_rows: int) -> Iterator[PageOps]:
    """``table``'s pages as store operations: the column-at-a-time path where it applies, else the
    reference path (module docstring)."""
    from ..relay.sources._pgsnapshot import PgSnapshot

    if ENABLED and isinstance(snap, PgSnapshot) and type(codecs) is Codecs:
        yield from fast_page_ops(snap, table, codecs, page_rows)
        return
    from ._seed_source import read_ops

    for page in snap.pages(table, page_rows):
        yield page.scn, len(page.rows), read_ops(codecs, table, page.scn, page.rows)


def fast_page_ops(snap: Any, table: str, codecs: Codecs, page_rows: int) -> Iterator[PageOps]:
    """The pages of ``table`` of the PostgreSQL snapshot ``snap``, encoded a column at a time."""
    from ..relay.sources._pgcolumns import PageEncoder
    from ..relay.sources._pgsnapshot import parse_rows
    from ._seed_source import read_ops

    meta = next(m for m in snap.tables if m.name == table)
    parsers = snap.parsers(table)
    codec = codecs.for_change(RowChange(snap.start_scn, meta, Op.READ, (), None, {}))
    fp = codec.version.fingerprint
    encoder: PageEncoder | None = PageEncoder(meta, parsers, codec.version.schema["fields"], snap.types(table))
    for scn, raw_rows, _done in prefetch(snap.raw_pages(table, page_rows), 1, "headrace-seed-prefetch"):
        ops = None
        if encoder is not None:
            try:
                with gc_paused():
                    ops = _encode_page(encoder, table, scn, fp, raw_rows)
            except Exception as exc:  # the reference path gives the same frames or its own error
                log.info("seed_reference_path", table=table, why=f"{type(exc).__name__}: {exc}"[:200])
                encoder = None
        if ops is None:
            ops = read_ops(codecs, table, scn, parse_rows(meta, scn, parsers, raw_rows))
        yield scn, len(raw_rows), ops


def _encode_page(encoder: Any, table: str, scn: int, fp: str, raw_rows: list[tuple[Any, ...]]) -> list[RowOp]:
    """:func:`._seed_source.read_ops` of a page of text rows, a column at a time."""
    if not raw_rows:
        return []
    keys, afters, nums = encoder.encode(raw_rows)
    frames = read_frames(scn, table, [fp] * len(keys), keys, afters)
    if nums is not None and all(-_I64 <= n < _I64 for n in nums):
        sks = [b"\x01" + (n + _I64).to_bytes(8, "big") for n in nums]  # sort_key of a one-integer key
    else:
        sks = [sort_key(k) for k in keys]
    out: dict[bytes, RowOp] = {}  # a key seen twice keeps its last row, as read_ops
    for sk, frame in zip(sks, frames, strict=True):
        out[sk] = RowOp(table, sk, scn, frame)
    return list(out.values())
