"""SQL expressions computing :mod:`._canon`'s canonical texts and hashes inside PostgreSQL and MariaDB.

Each function returns SQL text; ``col`` is an already quoted column reference. ``kind`` is the
column's kind on the source (what the value *is*), ``physical`` its kind on this side (how this side
stores it: a replica may keep a PostgreSQL ``uuid`` as MariaDB text, a ``timestamptz`` as a naive
``DATETIME``). SQLite has neither ``md5`` nor the formatting functions, so it computes the row texts
with the Python functions of :mod:`._canon`, registered on its connection (:func:`sqlite_functions`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from ._canon import md5_hex, row_text

__all__ = ["SQLITE_ROW_FUNCTION", "hash_expr", "hex32_expr", "sqlite_functions"]

#: the SQLite function ``hr_row(kinds, v1, v2, …)`` → MD5 hex of the canonical row text
SQLITE_ROW_FUNCTION = "hr_row"
_SQLITE_HEX32 = "hr_hex32"

_TEXT_TEMPORAL = {"date": "date", "time": "time", "timestamp": "timestamp", "timestamptz": "timestamptz"}


def _pg_trim(t: str) -> str:
    x = f"(CASE WHEN strpos({t}, '.') > 0 THEN rtrim(rtrim({t}, '0'), '.') ELSE {t} END)"
    return f"(CASE WHEN {x} = '-0' THEN '0' ELSE {x} END)"


def _pg_text(kind: str, physical: str, col: str) -> str:
    if physical == "string" and kind in _TEXT_TEMPORAL:
        col, physical = f"CAST({col} AS {_TEXT_TEMPORAL[kind]})", kind
    if kind == "boolean":
        return f"(CASE WHEN {col}::text IN ('true', 't', '1') THEN '1' ELSE '0' END)"
    if kind == "decimal":
        return _pg_trim(f"{col}::text")
    if kind in ("float", "double"):
        f = f"{col}::float8"
        return (
            f"(CASE WHEN {f} = 'NaN'::float8 OR {f} IN ('Infinity'::float8, '-Infinity'::float8) THEN {f}::text "
            f"ELSE {_pg_trim(f'round({f}::numeric, 9)::text')} END)"
        )
    if kind == "bytes" and physical == "bytes":
        return f"encode({col}, 'hex')"
    if kind == "date":
        return f"to_char({col}, 'YYYY-MM-DD')"
    if kind == "time":
        return f"to_char({col}::time::interval, 'HH24:MI:SS.US')"
    if kind in ("timestamp", "timestamptz"):
        src = f"({col} AT TIME ZONE 'UTC')" if physical == "timestamptz" else col
        return f"to_char({src}, 'YYYY-MM-DD HH24:MI:SS.US')"
    if kind == "uuid":
        return f"lower(replace({col}::text, '-', ''))"
    return f"{col}::text"


def _my_trim(t: str) -> str:
    x = f"IF(LOCATE('.', {t}) > 0, TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {t})), {t})"
    return f"IF({x} = '-0', '0', {x})"


def _my_text(kind: str, physical: str, col: str) -> str:
    if kind == "boolean":
        return f"IF(CAST({col} AS CHAR) IN ('1', 't', 'true'), '1', '0')"
    if kind == "decimal":
        return _my_trim(f"CAST({col} AS CHAR)")
    if kind in ("float", "double"):
        return _my_trim(f"CAST(CAST({col} AS DECIMAL(65, 9)) AS CHAR)")
    if kind == "bytes" and physical == "bytes":
        return f"LOWER(HEX({col}))"
    if kind == "date":
        return f"DATE_FORMAT({col}, '%Y-%m-%d')"
    if kind == "time":
        return f"TIME_FORMAT({col}, '%H:%i:%s.%f')"
    if kind in ("timestamp", "timestamptz"):
        return f"DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"
    if kind == "uuid":
        return f"LOWER(REPLACE(CAST({col} AS CHAR), '-', ''))"
    return f"CAST({col} AS CHAR)"


def hash_expr(dialect: str, columns: Sequence[tuple[str, str, str]]) -> str:
    """SQL for the MD5 hex of the canonical text of ``columns`` ((quoted column, kind, physical kind))."""
    if dialect == "postgresql":
        parts = []
        for col, kind, physical in columns:
            t = _pg_text(kind, physical, col)
            parts.append(f"(CASE WHEN {col} IS NULL THEN 'N' ELSE md5({t}) END)")
        return "md5(" + (" || ".join(parts) or "''") + ")"
    if dialect in ("mysql", "mariadb"):
        parts = []
        for col, kind, physical in columns:
            t = _my_text(kind, physical, col)
            parts.append(f"IF({col} IS NULL, 'N', MD5(CONVERT({t} USING utf8mb4)))")
        return "MD5(CONCAT(" + (", ".join(parts) or "''") + "))"
    if dialect == "sqlite":
        kinds = ",".join(k for _, k, _ in columns)
        return f"{SQLITE_ROW_FUNCTION}('{kinds}'{''.join(', ' + c for c, _, _ in columns)})"
    raise ValueError(f"verify does not know the SQL dialect {dialect!r} (PostgreSQL, MariaDB/MySQL, SQLite)")


def hex32_expr(dialect: str, hexpr: str, start: int) -> str:
    """SQL for the unsigned integer of the 8 hex digits of ``hexpr`` from position ``start`` (1-based)."""
    sub = f"substr({hexpr}, {start}, 8)"
    if dialect == "postgresql":
        return f"('x' || lpad({sub}, 16, '0'))::bit(64)::bigint"
    if dialect in ("mysql", "mariadb"):
        return f"CAST(CONV({sub}, 16, 10) AS UNSIGNED)"
    return f"{_SQLITE_HEX32}({sub})"


def _row(kinds: str, *values: Any) -> str:
    return md5_hex(row_text(kinds.split(",") if kinds else [], values))


def _hex32(h: str | None) -> int | None:
    return None if h is None else int(h, 16)


def sqlite_functions(conn: sqlite3.Connection) -> None:
    """Register ``hr_row`` and ``hr_hex32`` on a SQLite connection (deterministic functions)."""
    conn.create_function(SQLITE_ROW_FUNCTION, -1, _row, deterministic=True)
    conn.create_function(_SQLITE_HEX32, 1, _hex32, deterministic=True)
