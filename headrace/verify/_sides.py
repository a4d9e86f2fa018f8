"""The sides of a comparison: a table in a SQL database (aggregated by the database) or rows held in
memory (a Parquet export, read with Arrow; hashed and aggregated here)."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ._canon import md5_hex, row_text
from ._merkle import IN_CHUNK, Digest, SideStats
from ._sqlcanon import hash_expr, hex32_expr, sqlite_functions

__all__ = ["Col", "MemorySide", "SqlSide", "bootstrap_rows", "session_setup"]


@dataclass(frozen=True, slots=True)
class Col:
    """A compared column: its name, its kind on the source, and its kind as this side stores it."""

    name: str
    kind: str
    physical: str


def session_setup(engine: sa.engine.Engine) -> None:
    """Fix each connection's session so texts do not depend on it (UTC, ISO intervals); SQLite: functions."""
    dialect = engine.dialect.name

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        if dialect == "sqlite":
            sqlite_functions(dbapi_conn)
            return
        cur = dbapi_conn.cursor()
        if dialect == "postgresql":
            cur.execute("SET TimeZone = 'UTC'")
            cur.execute("SET IntervalStyle = 'iso_8601'")
        elif dialect in ("mysql", "mariadb"):
            cur.execute("SET time_zone = '+00:00'")
        cur.close()
        if dialect == "postgresql" and not getattr(dbapi_conn, "autocommit", True):
            dbapi_conn.commit()


def _size(row: Sequence[Any]) -> int:
    return sum(len(str(v)) for v in row)


class SqlSide:
    """A table in a SQL database; every digest and row hash is computed by the database.

    The root digest is one aggregate over the table (all an equal copy costs). The first question
    below the root hashes every row once into a temporary table (``kh, rh, h1, h2`` and the key
    values) on this side's own connection, so the descent's later levels read narrow rows and see one
    consistent state of the table. Where a temporary table cannot be made (a hot standby, no
    ``TEMP`` privilege), every level hashes the table again (:attr:`materialized` is then False).
    ``rows(…, fresh=True)`` (the recheck) always reads the table itself.
    """

    def __init__(self, engine: sa.engine.Engine, table: sa.Table, key: Sequence[Col], columns: Sequence[Col]) -> None:
        self.engine = engine
        self.stats = SideStats()
        d = engine.dialect.name
        self.dialect = d
        prep = engine.dialect.identifier_preparer
        q = prep.quote
        kh = hash_expr(d, [(q(c.name), c.kind, c.physical) for c in key])
        rh = hash_expr(d, [(q(c.name), c.kind, c.physical) for c in columns])
        keys = "".join(f", {q(c.name)} AS k{i}" for i, c in enumerate(key))
        self.nkey = len(key)
        # LIMIT/OFFSET keep the planner from merging the subquery into the aggregate above it, which
        # would compute each row's hashes once per reference instead of once
        fence = {"postgresql": " OFFSET 0", "sqlite": " LIMIT -1 OFFSET 0"}.get(d, " LIMIT 18446744073709551615")
        inner = f"SELECT {kh} AS kh, {rh} AS rh{keys} FROM {prep.format_table(table)}{fence}"
        self.fresh = f"({inner}) s"
        h1, h2 = hex32_expr(d, "rh", 1), hex32_expr(d, "rh", 9)
        self._create = (
            f"SELECT kh, rh, {h1} AS h1, {h2} AS h2{''.join(f', k{i}' for i in range(len(key)))} FROM ({inner}) s"
        )
        self.source = self.fresh
        self.sums = f"sum({h1}) AS s1, sum({h2}) AS s2"
        self.materialized: bool | None = None
        self.conn = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        self._temp = f"hr_verify_{secrets.token_hex(6)}"

    def close(self) -> None:
        """Drop the temporary table (it would go with the session anyway) and close the connection."""
        try:
            if self.materialized:
                self.conn.execute(sa.text(f"DROP TABLE {self._temp}"))
        except sa.exc.DBAPIError:
            pass
        self.conn.close()

    def _materialize(self) -> None:
        if self.materialized is not None:
            return
        create = "CREATE TEMPORARY TABLE" if self.dialect != "postgresql" else "CREATE TEMP TABLE"
        try:
            self.conn.execute(sa.text(f"{create} {self._temp} AS {self._create}"))
        except sa.exc.DBAPIError as exc:
            if isinstance(exc, sa.exc.OperationalError) and "temp" not in str(exc.orig).lower():
                raise
            self.materialized = False
            return
        finally:
            self.stats.round_trips += 1
        self.materialized = True
        self.source = self._temp
        self.sums = "sum(h1) AS s1, sum(h2) AS s2"

    def _run(self, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        stmt = sa.text(sql)
        lists = [k for k, v in params.items() if isinstance(v, list)]
        if lists:
            stmt = stmt.bindparams(*(sa.bindparam(k, expanding=True) for k in lists))
        rows = [tuple(r) for r in self.conn.execute(stmt, params)]
        self.stats.round_trips += 1
        self.stats.bytes += sum(_size(r) for r in rows)
        return rows

    def digests(self, depth: int, within: Sequence[str]) -> dict[str, Digest]:
        if depth > 0:
            self._materialize()
        sel = f"SELECT substr(kh, 1, {depth}) AS p, count(*) AS n, {self.sums} FROM {self.source}"
        out: dict[str, Digest] = {}
        chunks = [list(within[i : i + IN_CHUNK]) for i in range(0, len(within), IN_CHUNK)] or [[]]
        for chunk in chunks:
            if chunk:
                rows = self._run(f"{sel} WHERE substr(kh, 1, {depth - 1}) IN :ps GROUP BY 1", {"ps": list(chunk)})
            else:
                rows = self._run(f"{sel} GROUP BY 1", {})
            for p, n, s1, s2 in rows:
                if int(n):
                    out[str(p)] = Digest(int(n), int(s1 or 0), int(s2 or 0))
        self.stats.buckets += len(out)
        return out

    def rows(self, prefixes: Sequence[str], fresh: bool = False) -> dict[str, tuple[str, list[Any]]]:
        keys = "".join(f", k{i}" for i in range(self.nkey))
        src = self.fresh if fresh else self.source
        out: dict[str, tuple[str, list[Any]]] = {}
        for i in range(0, len(prefixes), IN_CHUNK):
            by_len: dict[int, list[str]] = defaultdict(list)
            for p in prefixes[i : i + IN_CHUNK]:
                by_len[len(p)].append(p)
            # one statement for leaves of every depth: substr(kh, 1, n) IN (the leaves n digits long) OR …
            where = " OR ".join(f"substr(kh, 1, {n}) IN :p{n}" for n in sorted(by_len))
            params = {f"p{n}": ps for n, ps in by_len.items()}
            for r in self._run(f"SELECT kh, rh{keys} FROM {src} WHERE {where}", params):
                out[str(r[0])] = (str(r[1]), list(r[2:]))
        self.stats.rows += len(out)
        return out


class MemorySide:
    """Rows hashed in this process (a Parquet export): the same digests, computed here."""

    def __init__(self, rows: Iterable[dict[str, Any]], key: Sequence[Col], columns: Sequence[Col]) -> None:
        self.stats = SideStats()
        kk, kn = [c.kind for c in key], [c.name for c in key]
        ck, cn = [c.kind for c in columns], [c.name for c in columns]
        self.hashed: list[tuple[str, str, list[Any]]] = []
        for r in rows:
            kv = [r[n] for n in kn]
            self.hashed.append((md5_hex(row_text(kk, kv)), md5_hex(row_text(ck, [r[n] for n in cn])), kv))

    def digests(self, depth: int, within: Sequence[str]) -> dict[str, Digest]:
        self.stats.round_trips += 1
        want = set(within)
        acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for kh, rh, _ in self.hashed:
            if want and kh[: depth - 1] not in want:
                continue
            a = acc[kh[:depth]]
            a[0] += 1
            a[1] += int(rh[:8], 16)
            a[2] += int(rh[8:16], 16)
        self.stats.buckets += len(acc)
        return {p: Digest(*v) for p, v in acc.items()}

    def close(self) -> None:
        """Nothing to release."""

    def rows(self, prefixes: Sequence[str], fresh: bool = False) -> dict[str, tuple[str, list[Any]]]:
        self.stats.round_trips += 1
        lengths = sorted({len(p) for p in prefixes})
        want = set(prefixes)
        out = {kh: (rh, kv) for kh, rh, kv in self.hashed if any(kh[:n] in want for n in lengths)}
        self.stats.rows += len(out)
        return out


def bootstrap_rows(
    url: str, table: str, token: str | None = None, page_rows: int = 5_000
) -> tuple[list[dict[str, Any]], int]:
    """Every row of ``table`` in a bootstrap server's snapshot (``/v1/snapshot``, pages pinned to the
    first page's SCN), decoded as a subscriber decodes them; and that SCN."""
    from ..errors import Unavailable
    from ..relay.client import BootstrapClient, EventDecoder

    client = BootstrapClient(url, token=token, timeout=60)
    decoder = EventDecoder(client.schema)
    rows: list[dict[str, Any]] = []
    after: str | None = None
    scn: int | None = None
    try:
        while True:
            page = client.snapshot([table], None, after, page_rows, snapshot_scn=scn)
            scn = page.snapshot_scn
            rows += [dict(decoder.decode(e).after or {}) for e in page.events]
            if page.done or page.cursor is None:
                return rows, scn
            after = page.cursor
    except Unavailable:
        raise
    except Exception as exc:  # a 410 (the snapshot re-seeded meanwhile) and the like: say which server
        raise Unavailable(f"bootstrap server {url}: {exc}") from exc
