"""``headrace reconcile``: the log path's counts per stream, stage by stage, from what each stage left.

Stages and what is counted (per ``(source, stream)``; a stream is one tailed path of one agent):

1. **agent** — bytes the agent says collectors acknowledged (``acked_offset`` in its ``/v1/status``);
2. **sink files** — chunks in the collector's sink files (``sink_dir/open`` and ``done``), not archived yet;
3. **archives** — chunks in the archive parts the manifests name (``archive_dir``), bytes and lines;
4. **demux** — Parquet rows plus error rows (``demux.output`` and its ``_errors``), by their
   ``_source``/``_stream`` columns;
5. **load** — rows in the loaded tables (``load.url``), by the same columns.

Checks (:func:`checks`, plain code): the bytes the agent acked are all held by sink files or archives
(no gap from the stream's first held byte up to the acked offset); the lines archived equal the rows
demux wrote plus its error rows; the rows demux parsed equal the rows loaded. Run it after
``archive``, ``demux`` and ``load`` (the nightly DAG does): a stage that has not run yet over what the
earlier one holds shows as a divergence. A data type whose processor joins lines into multi-line
records has fewer records than lines: its archive→demux check is then skipped (``--records-are-lines``
off) and only demux→load is checked.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._counts import Check, chunk_counts
from ..batch._merge import Coverage

__all__ = ["StreamCounts", "checks", "gather"]

Key = tuple[str, str]


@dataclass
class StreamCounts:
    """What each stage holds, per stream."""

    acked: dict[Key, int] = field(default_factory=dict)
    held: Coverage = field(default_factory=Coverage)  # byte ranges in sink files or archives
    first: dict[Key, int] = field(default_factory=dict)  # lowest byte held
    sink_bytes: Counter[Key] = field(default_factory=Counter)
    archived_bytes: Counter[Key] = field(default_factory=Counter)
    archived_lines: Counter[Key] = field(default_factory=Counter)
    parsed: Counter[Key] = field(default_factory=Counter)
    errors: Counter[Key] = field(default_factory=Counter)
    loaded: Counter[Key] = field(default_factory=Counter)
    data_type: dict[Key, str] = field(default_factory=dict)
    stages: set[str] = field(default_factory=set)  # the stages that were read
    joined_types: set[str] = field(default_factory=set)  # data types whose records are not lines

    def hold(self, records: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        """Mark the byte ranges of ``records`` held, passing them on."""
        for r in records:
            key = (str(r["source"]), str(r["stream"]))
            self.held.add(key, int(r["seq_start"]), int(r["seq_end"]))
            self.first[key] = min(self.first.get(key, int(r["seq_start"])), int(r["seq_start"]))
            self.data_type.setdefault(key, str(r["data_type"]))
            yield r

    def to_json(self) -> dict[str, Any]:
        keys = sorted(set(self.acked) | set(self.first) | set(self.parsed) | set(self.errors) | set(self.loaded))
        return {
            f"{s}/{t}": {
                "data_type": self.data_type.get((s, t)),
                "agent_acked_bytes": self.acked.get((s, t)),
                "sink_file_bytes": self.sink_bytes[s, t],
                "archived_bytes": self.archived_bytes[s, t],
                "archived_lines": self.archived_lines[s, t],
                "parsed_rows": self.parsed[s, t],
                "error_rows": self.errors[s, t],
                "loaded_rows": self.loaded[s, t],
            }
            for s, t in keys
        }


def _name(key: Key) -> str:
    return f"{key[0]}/{key[1]}"


def checks(c: StreamCounts) -> list[Check]:
    """Every check the counts allow, per stream in name order."""
    out: list[Check] = []
    keys = sorted(set(c.acked) | set(c.first) | set(c.parsed) | set(c.errors) | set(c.loaded))
    for key in keys:
        dtype = c.data_type.get(key, "")
        if key in c.acked and c.acked[key] > 0:
            acked = c.acked[key]
            start = min(c.first.get(key, 0), acked)
            missing = sum(e - s for s, e in c.held.gaps(key, start, acked))
            found = acked - start - missing
            out.append(Check(f"{_name(key)}: bytes acked by the agent = held in sink files or archives",
                             acked - start, found))  # fmt: skip
        if "demux" in c.stages and dtype not in c.joined_types and (c.archived_lines[key] or key in c.parsed):
            out.append(Check(f"{_name(key)}: lines archived = demux rows + errors",
                             c.archived_lines[key], c.parsed[key] + c.errors[key]))  # fmt: skip
        if "load" in c.stages and (c.parsed[key] or key in c.loaded):
            out.append(Check(f"{_name(key)}: demux rows = rows loaded", c.parsed[key], c.loaded[key]))
    return out


# -- reading the stages -----------------------------------------------------------------------------


def _chunks(raw: bytes) -> Iterator[dict[str, Any]]:
    from ..batch._archive import read_chunks

    yield from read_chunks(raw)


def read_sink_files(sink_dir: str, c: StreamCounts) -> None:
    """Count the chunks in a collector's sink files (open and closed)."""
    root = Path(sink_dir)
    files = sorted([*root.glob("open/*.avro"), *root.glob("done/*.avro")])
    for path in files:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:  # archived (and deleted) meanwhile: it is in the archives now
            continue
        _, size = chunk_counts(c.hold(_chunks(raw)), lambda r: (str(r["source"]), str(r["stream"])))
        c.sink_bytes.update(size)
    c.stages.add("sink")


def read_archives(archive_dir: str, c: StreamCounts) -> None:
    """Count the chunks of the archive parts every manifest names."""
    from .._storage import resolve
    from ..batch._archive import read_manifest
    from ..batch._layout import data_types, dates, day_dir

    store = resolve(archive_dir)
    for dtype in data_types(store):
        for date in dates(store, dtype):
            man = read_manifest(store, dtype, date)
            if man is None:
                continue
            for part in man.parts:
                raw = store.read_bytes(store.path(day_dir(dtype, date), part.name))
                lines, size = chunk_counts(c.hold(_chunks(raw)), lambda r: (str(r["source"]), str(r["stream"])))
                c.archived_lines.update(lines)
                c.archived_bytes.update(size)
    c.stages.add("archive")


def read_demux(output: str, c: StreamCounts, joined_types: Sequence[str] = ()) -> None:
    """Count demux's Parquet rows and error rows per stream (their ``_source``, ``_stream`` columns)."""
    import pyarrow.parquet as pq

    from .._storage import resolve
    from ..batch._demux import ERRORS_DIR
    from ..batch._layout import data_types, dates, day_dir

    store = resolve(output)
    for counter, under in ((c.parsed, None), (c.errors, ERRORS_DIR)):
        for dtype in data_types(store, under):
            for date in dates(store, dtype, under):
                folder = store.path(*(p for p in (under, day_dir(dtype, date)) if p))
                for f in store.list_files(folder):
                    if not f.endswith(".parquet"):
                        continue
                    path = f if f.startswith(folder) else posixpath.join(folder, f)
                    t = pq.read_table(path, filesystem=store.fs, columns=["_source", "_stream"])
                    for (s, st), n in Counter(
                        zip(t["_source"].to_pylist(), t["_stream"].to_pylist(), strict=True)
                    ).items():
                        counter[str(s), str(st)] += n
                        c.data_type.setdefault((str(s), str(st)), dtype)
    c.joined_types |= set(joined_types)
    c.stages.add("demux")


def read_loaded(url: str, tables: dict[str, str], c: StreamCounts) -> None:
    """Count the loaded rows per stream in each data type's table (``tables``: data type → table)."""
    import sqlalchemy as sa

    from .._db import create_engine

    engine = create_engine(url)
    try:
        insp = sa.inspect(engine)
        with engine.connect() as conn:
            for _dtype, table in sorted(tables.items()):
                if not insp.has_table(table):
                    continue
                q = engine.dialect.identifier_preparer.quote
                sql = f"SELECT {q('_source')}, {q('_stream')}, count(*) FROM {q(table)} GROUP BY 1, 2"
                for s, st, n in conn.execute(sa.text(sql)):
                    c.loaded[str(s), str(st)] += int(n)
    finally:
        engine.dispose()
    c.stages.add("load")


def read_agent(url: str, c: StreamCounts, token: str | None = None) -> None:
    """The acked offsets of an agent's streams (its ``/v1/status``)."""
    import httpx

    from ..errors import Unavailable

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(url.rstrip("/") + "/v1/status", headers=headers, timeout=10)
        r.raise_for_status()
    except httpx.HTTPError as exc:
        raise Unavailable(f"agent {url}: {exc}") from exc
    status = r.json()
    for s in status.get("streams", []):
        if s.get("stream"):
            key = (str(status["name"]), str(s["stream"]))  # chunks carry the agent's name as their source
            c.acked[key] = int(s["acked_offset"])
            c.data_type.setdefault(key, str(s.get("data_type") or ""))
    c.stages.add("agent")


def gather(
    *,
    agents: Sequence[str] = (),
    agent_token: str | None = None,
    sink_dirs: Sequence[str] = (),
    archive_dir: str | None = None,
    demux_output: str | None = None,
    load_url: str | None = None,
    load_tables: dict[str, str] | None = None,
    joined_types: Sequence[str] = (),
) -> StreamCounts:
    """Read every stage that is given. Sink files are read before the archives, so a sink file the
    archive job moves meanwhile is counted in one or both (the checks use byte ranges, not sums)."""
    c = StreamCounts()
    for url in agents:
        read_agent(url, c, agent_token)
    for d in sink_dirs:
        read_sink_files(d, c)
    if archive_dir:
        read_archives(archive_dir, c)
    if demux_output:
        read_demux(demux_output, c, joined_types)
    if load_url and load_tables is not None:
        read_loaded(load_url, load_tables, c)
    return c
