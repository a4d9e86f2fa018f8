"""PostgreSQL conformance harness: what a relay delivers, compared value for value with PostgreSQL itself.

Two independent witnesses of every change, both taken from the same server:

* a ``test_decoding`` slot created right after the relay created its own slot (no write happens in
  between, so both slots see the same transactions); its text output, read with
  :func:`test_decoding_changes` in a session with fixed output settings (:data:`SESSION`), is parsed
  into transactions of changes (:func:`parse_test_decoding`), each value in PostgreSQL's own text form;
* the final rows, every column in its type's output text (:func:`select_text`; ``col::text`` but
  without the casts that print differently, such as boolean's ``true``).

The end of a workload is a row inserted into :data:`MARKER` (captured like any table): once a
subscriber has its event, the relay has decoded everything committed before it.

A delivered value (a Python value decoded by the headrace client) is turned into PostgreSQL's text
form by :func:`pg_text` and compared as text (:func:`same_value`; JSON is compared parsed, numbers
exactly). :meth:`Comparer.transactions` aligns test_decoding's transactions with the relay's windows
in commit order and lists every difference; an empty list is the pass condition.

The value contract followed by :func:`pg_text` (docs/type-mapping.md): ``str`` values are already
PostgreSQL's text (text types, enums, types without a Python counterpart, and the ``text_fallback``
branch for infinity/BC/year ≥ 10000/24:00/NaN/non-standard arrays); ``Decimal`` → plain digits;
dates and timestamps → ISO text (``DateStyle=ISO``), timestamptz in UTC with ``+00``; intervals →
ISO 8601 (``IntervalStyle=iso_8601``); floats → the shortest text that round-trips, laid out as
PostgreSQL does with ``extra_float_digits`` > 0; arrays → PostgreSQL's array text.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import decimal
import difflib
import json
import os
import re
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from db_servers import PgServer
from sources_harness import start_relay
from support import Daemon

import headrace.relay as _relay
from headrace.relay.client import Subscriber, Window
from headrace.relay.client._decode import ChangeEvent

#: Output settings of every comparison session: the same the relay's replication session uses.
SESSION = "-c DateStyle=ISO -c IntervalStyle=iso_8601 -c TimeZone=UTC -c bytea_output=hex -c extra_float_digits=3"

#: The column the relay adds to list the columns of an UPDATE that kept their unchanged TOASTed value.
UNCHANGED_COLUMN = "_headrace_unchanged"

#: The table whose rows mark the end of a workload (see the module docstring).
MARKER = "zz_conformance_end"

#: test_decoding's marker for an unchanged TOASTed value that the WAL record does not carry.
UNCHANGED_TOAST = "unchanged-toast-datum"

JSON_NULL: Any = getattr(_relay, "JSON_NULL", object())  # the client's sentinel for a top-level JSON null
_INTERVAL_CLASS: Any = getattr(_relay, "Interval", None)

_DUMP = os.environ.get("HEADRACE_CONFORMANCE_DUMP")  # a file to list every comparison in (debugging)
_JSON_TYPES = {"json", "jsonb"}


def session(pg: PgServer, db: str, raw: bool = False) -> Any:
    """An autocommit connection with the fixed output settings of :data:`SESSION`; ``raw``: every
    column comes back as the type's output text (not ``col::text``: that cast differs from the
    output function for boolean ``true``, inet's netmask and char(n)'s padding)."""
    import psycopg2
    import psycopg2.extensions

    conn = psycopg2.connect(pg.dsn(db), options=SESSION)
    conn.autocommit = True
    if raw:
        with conn.cursor() as cur:
            cur.execute("SELECT oid FROM pg_type")
            oids = tuple(r[0] for r in cur.fetchall())
        psycopg2.extensions.register_type(psycopg2.extensions.new_type(oids, "PGTEXT", lambda v, _c: v), conn)
    return conn


# -- Python value → PostgreSQL text ------------------------------------------------------------------


def _shortest(v: float, real: bool) -> Decimal:
    """The shortest decimal strictly closer to ``v`` (> 0) than to either neighbouring float, the
    closest one if several (Ryu, as PostgreSQL uses it: a decimal exactly halfway to a neighbour is
    not taken, unlike in Python's repr)."""
    fmt, ifmt, top = ("<f", "<I", 9) if real else ("<d", "<Q", 17)
    bits = struct.unpack(ifmt, struct.pack(fmt, v))[0]
    exact = Decimal(struct.unpack(fmt, struct.pack(ifmt, bits))[0])
    lo, hi = (Decimal(struct.unpack(fmt, struct.pack(ifmt, b))[0]) for b in (bits - 1, bits + 1))
    hi = hi if hi.is_finite() else 2 * exact - lo  # past the largest float: one more step up
    ctx = decimal.Context(prec=1000)
    for digits in range(1, top + 1):
        unit = Decimal(1).scaleb(exact.adjusted() - digits + 1)
        cands = {exact.quantize(unit, rounding=r, context=ctx) for r in (decimal.ROUND_FLOOR, decimal.ROUND_CEILING)}
        inside = [d for d in cands if abs(d - exact) < abs(d - lo) and abs(d - exact) < abs(d - hi)]
        if inside:
            return min(inside, key=lambda d: (abs(d - exact), d))
    return exact


def float_text(v: float, real: bool = False) -> str:
    """``float8out``/``float4out`` with ``extra_float_digits`` > 0: shortest round-trip digits, fixed
    notation for decimal exponents in [-4, 15) (``real``: [-4, 6)), else ``d.ddde+XX``."""
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    if v == 0:
        return "-0" if struct.pack(">d", v)[0] & 0x80 else "0"
    sign = "-" if v < 0 else ""
    d = _shortest(abs(v), real).normalize()
    digits = "".join(str(x) for x in d.as_tuple().digits)
    exp10 = d.adjusted()  # exponent of the leading digit
    if -4 <= exp10 < (6 if real else 15):
        if exp10 >= 0:
            whole, frac = digits[: exp10 + 1].ljust(exp10 + 1, "0"), digits[exp10 + 1 :]
            return sign + whole + ("." + frac if frac else "")
        return sign + "0." + "0" * (-exp10 - 1) + digits
    mant = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mant}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def _frac(us: int) -> str:
    return f".{us:06d}".rstrip("0") if us else ""


def _offset_text(off: dt.timedelta) -> str:
    secs = int(off.total_seconds())
    sign = "-" if secs < 0 else "+"
    h, rest = divmod(abs(secs), 3600)
    m, s = divmod(rest, 60)
    return f"{sign}{h:02d}" + (f":{m:02d}" if m or s else "") + (f":{s:02d}" if s else "")


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


def interval_text(months: int, days: int, micros: int) -> str:
    """PostgreSQL's ``IntervalStyle=iso_8601`` text of an interval's three fields (EncodeInterval)."""
    if not (months or days or micros):
        return "PT0S"
    year, mon = _trunc_div(months, 12), months - 12 * _trunc_div(months, 12)
    hour = _trunc_div(micros, 3_600_000_000)
    rest = micros - hour * 3_600_000_000
    minute = _trunc_div(rest, 60_000_000)
    rest -= minute * 60_000_000
    sec = _trunc_div(rest, 1_000_000)
    fsec = rest - sec * 1_000_000
    out = "P" + "".join(f"{n}{u}" for n, u in ((year, "Y"), (mon, "M"), (days, "D")) if n)
    if hour or minute or sec or fsec:
        out += "T" + "".join(f"{n}{u}" for n, u in ((hour, "H"), (minute, "M")) if n)
        if sec or fsec:
            out += ("-" if sec < 0 or fsec < 0 else "") + str(abs(sec)) + _frac(abs(fsec)) + "S"
    return out


def _array_elem(value: Any, elem_type: str, delim: str) -> str:
    if isinstance(value, list):
        return "{" + delim.join(_array_elem(v, elem_type, delim) for v in value) + "}"
    if value is None:
        return "NULL"
    s = pg_text(value, elem_type)
    assert s is not None
    if s == "" or s.upper() == "NULL" or any(c in s for c in '{}"\\ \t\n\r\v\f' + delim):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return s


def pg_text(value: Any, pg_type: str) -> str | None:
    """PostgreSQL's text form (in a :data:`SESSION`) of a value the headrace client delivered for a
    column of type ``pg_type`` (``format_type`` without modifiers, a domain given as its base type).

    ``None`` is SQL NULL. JSON has no single text form (``json`` keeps the text as written): compare
    it with :func:`same_value`.
    """
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if pg_type.endswith("[]") and isinstance(value, list):
        return _array_elem(value, pg_type[:-2], ";" if pg_type == "box[]" else ",")
    if value is JSON_NULL:
        return "null"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return float_text(value, real=pg_type == "real")
    if isinstance(value, Decimal):
        if value.is_nan():
            return "NaN"
        if value.is_infinite():
            return "Infinity" if value > 0 else "-Infinity"
        return format(value, "f")
    if isinstance(value, bytes | bytearray | memoryview):
        return "\\x" + bytes(value).hex()
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(dt.UTC)
            return utc.replace(tzinfo=None).isoformat(" ", "seconds") + _frac(utc.microsecond) + "+00"
        return value.isoformat(" ", "seconds") + _frac(value.microsecond)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, dt.time):
        text = value.replace(microsecond=0, tzinfo=None).isoformat() + _frac(value.microsecond)
        off = value.utcoffset()
        return text + (_offset_text(off) if off is not None else "")
    if isinstance(value, dt.timedelta):
        return interval_text(0, value.days, value.seconds * 1_000_000 + value.microseconds)
    if _INTERVAL_CLASS is not None and isinstance(value, _INTERVAL_CLASS):
        return interval_text(value.months, value.days, value.microseconds)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict | list):
        return json_text(value)
    raise TypeError(f"no PostgreSQL text form for {type(value).__name__} {value!r} ({pg_type})")


def json_text(value: Any) -> str:
    """JSON text of a parsed value with exact numbers (for writing JSON, and for messages)."""
    if value is None or value is JSON_NULL:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(json_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {json_text(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not JSON: {value!r}")


def strict_eq(a: Any, b: Any) -> bool:
    """Deep equality that tells ``True`` from ``1``, ``1`` from ``Decimal('1')`` and ``2.50`` from ``2.5``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(strict_eq(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_eq(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Decimal):
        return bool(a.as_tuple() == b.as_tuple())  # 2.50 is not 2.5: the text kept its digits
    if isinstance(a, float):
        return repr(a) == repr(b)  # tells -0.0 from 0.0
    return bool(a == b)


def _json_number(text: str) -> float | Decimal:
    f = float(text)
    return f if repr(f) == text else Decimal(text)


def parse_json(text: str) -> Any:
    """JSON text as the client must decode it (docs/type-mapping.md): a number with a fraction or an
    exponent is a float when the float prints back as the same text, else an exact Decimal; a top-level
    ``null`` is :data:`JSON_NULL`."""
    v = json.loads(text, parse_float=_json_number)
    return JSON_NULL if v is None else v


def same_value(value: Any, pg_type: str, text: str | None) -> bool:
    """Whether a delivered value is the value PostgreSQL shows as ``text`` (None: SQL NULL)."""
    if text is None or value is None:
        return text is None and value is None
    if pg_type in _JSON_TYPES:
        return strict_eq(value, parse_json(text))
    try:
        return pg_text(value, pg_type) == text
    except TypeError:
        return False


# -- test_decoding output -----------------------------------------------------------------------------


@dataclass
class TdChange:
    """One change as test_decoding printed it; values are PostgreSQL text (None: SQL NULL)."""

    table: str  # the relay's name: ``t`` for public.t, ``s.t`` otherwise
    op: str  # c u d t (Debezium letters, as the relay's events)
    new: dict[str, str | None] | None = None
    old: dict[str, str | None] | None = None
    types: dict[str, str] = field(default_factory=dict)
    line: str = ""
    qualified: tuple[str, str] = ("", "")  # (schema, table) as PostgreSQL names it


def _ident(s: str, i: int) -> tuple[str, int]:
    if s[i] == '"':
        out, i = [], i + 1
        while True:
            if s[i] == '"':
                if i + 1 < len(s) and s[i + 1] == '"':
                    out.append('"')
                    i += 2
                    continue
                return "".join(out), i + 1
            out.append(s[i])
            i += 1
    j = i
    while j < len(s) and s[j] not in '.:,[ "':
        j += 1
    return s[i:j], j


def _qualified(s: str, i: int) -> tuple[tuple[str, str], int]:
    schema, i = _ident(s, i)
    if s[i] != ".":
        return ("public", schema), i
    name, i = _ident(s, i + 1)
    return (schema, name), i


def relay_table_name(schema: str, name: str) -> str:
    """The source name the relay gives a table: ``orders`` for public.orders, ``sales.orders`` else, a
    part with a dot or a double quote double-quoted (``"s3.rx"`` for public."s3.rx")."""

    def part(p: str) -> str:
        return '"' + p.replace('"', '""') + '"' if "." in p or '"' in p else p

    return part(name) if schema == "public" else f"{part(schema)}.{part(name)}"


def _tuple(s: str, i: int) -> tuple[dict[str, str | None], dict[str, str], int]:
    """Columns ``name[type]:value`` from ``s[i:]`` up to the end or `` new-tuple:``."""
    vals: dict[str, str | None] = {}
    types: dict[str, str] = {}
    while i < len(s):
        if s[i] == " ":
            i += 1
            continue
        if s.startswith("new-tuple:", i) or s.startswith("(no-tuple-data)", i):
            break
        name, i = _ident(s, i)
        assert s[i] == "[", f"expected '[' at {i}: {s[max(0, i - 40) : i + 40]!r}"
        end = s.index("]:", i + 1)
        typ, i = s[i + 1 : end], end + 2
        if s[i] == "'":
            j, buf = i + 1, []
            while True:
                k = s.index("'", j)
                buf.append(s[j:k])
                if k + 1 < len(s) and s[k + 1] == "'":
                    buf.append("'")
                    j = k + 2
                    continue
                i = k + 1
                break
            value: str | None = "".join(buf)
        elif s.startswith("B'", i):
            k = s.index("'", i + 2)
            value, i = s[i + 2 : k], k + 1
        else:
            k = s.find(" ", i)
            k = len(s) if k < 0 else k
            raw, i = s[i:k], k
            value = {"null": None, "true": "t", "false": "f"}.get(raw, raw)
        vals[name] = value
        types[name] = typ
    return vals, types, i


_OPS = {"INSERT": "c", "UPDATE": "u", "DELETE": "d", "TRUNCATE": "t"}


def parse_change(line: str) -> list[TdChange]:
    """One ``table …: OP: …`` line (a TRUNCATE line names several tables: one change per table)."""
    assert line.startswith("table "), line
    i, tables = 6, []
    while True:
        name, i = _qualified(line, i)
        tables.append(name)
        if line.startswith(", ", i):
            i += 2
            continue
        break
    assert line.startswith(": ", i), line[:200]
    op_end = line.index(":", i + 2)
    op = _OPS[line[i + 2 : op_end]]
    rest = line[op_end + 1 :]
    if op == "t":
        return [TdChange(relay_table_name(*t), "t", line=line, qualified=t) for t in tables]
    ch = TdChange(relay_table_name(*tables[0]), op, line=line, qualified=tables[0])
    if op == "u" and rest.startswith(" old-key:"):
        ch.old, ch.types, j = _tuple(rest, len(" old-key:"))
        assert rest.startswith("new-tuple:", j), rest[j : j + 40]
        ch.new, types, _ = _tuple(rest, j + len("new-tuple:"))
        ch.types.update(types)
    elif op in ("c", "u"):
        ch.new, ch.types, _ = _tuple(rest, 0)
    elif "(no-tuple-data)" not in rest[:17]:
        ch.old, ch.types, _ = _tuple(rest, 0)
    return [ch]


def parse_test_decoding(rows: Iterable[str]) -> list[list[TdChange]]:
    """test_decoding output (``include-xids 0``) → transactions of row changes; messages are left out,
    and so are transactions left without a change."""
    txns: list[list[TdChange]] = []
    cur: list[TdChange] | None = None
    for data in rows:
        if data == "BEGIN" or data.startswith("BEGIN "):
            cur = []
        elif data == "COMMIT" or data.startswith("COMMIT "):
            if cur:
                txns.append(cur)
            cur = None
        elif data.startswith("table "):
            assert cur is not None, f"change outside a transaction: {data[:200]}"
            cur.extend(parse_change(data))
        elif data.startswith(("message:", "PREPARE", "ROLLBACK")):
            continue
        else:
            raise AssertionError(f"unexpected test_decoding line: {data[:200]!r}")
    return txns


def test_decoding_changes(pg: PgServer, db: str, slot: str) -> list[list[TdChange]]:
    """Everything the test_decoding slot has (consumed), parsed."""
    with contextlib.closing(session(pg, db)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT data FROM pg_logical_slot_get_changes(%s, NULL, NULL, 'include-xids', '0', "
            "'skip-empty-xacts', '1')",
            (slot,),
        )
        return parse_test_decoding(r[0] for r in cur.fetchall())


# -- type names -------------------------------------------------------------------------------------


def generated_columns(pg: PgServer, db: str) -> dict[str, set[str]]:
    """Table (as test_decoding names it, without ``public.``) → its stored generated columns. PostgreSQL
    15–17's pgoutput never sends them, and the relay leaves them out of its schemas (a documented
    decision, docs/sources-postgres.md): they must be absent from events, never claimed null."""
    rows = pg.execute(
        "SELECT n.nspname, c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE a.attgenerated = 's' AND NOT a.attisdropped",
        db,
    )
    out: dict[str, set[str]] = {}
    for nsp, rel, col in rows:
        out.setdefault(rel if nsp == "public" else f"{nsp}.{rel}", set()).add(col)
    return out


def base_types(pg: PgServer, db: str) -> dict[str, str]:
    """Domain name → its base type name, for domains and arrays of domains (as ``format_type`` names)."""
    rows = pg.execute(
        "SELECT format_type(t.oid, NULL), format_type(t.typbasetype, NULL) FROM pg_type t "
        "JOIN pg_namespace n ON n.oid = t.typnamespace WHERE t.typtype = 'd' AND n.nspname NOT IN "
        "('pg_catalog', 'information_schema')",
        db,
    )
    out = {d: b for d, b in rows}
    out.update({f"{d}[]": f"{b}[]" for d, b in rows if not b.endswith("[]")})
    return out


# -- the relay side -----------------------------------------------------------------------------------


def healthy(url: str) -> tuple[bool, str]:
    """(``/healthz`` says OK, what it and ``/v1/status`` say about capture)."""
    try:
        h = httpx.get(url + "/healthz", timeout=5)
        st = httpx.get(url + "/v1/status", timeout=5).json().get("capture")
    except httpx.HTTPError as exc:
        return False, f"relay unreachable: {exc!r}"
    st = st or {}
    stopped = st.get("state") == "stopped" or st.get("failed") or st.get("error")
    ok = h.status_code == 200 and h.json().get("ok", True) is not False and not stopped
    return ok, f"/healthz {h.status_code} {h.text[:500]}; capture {st}"


def relay_windows(url: str, marker_id: int, timeout: float = 60.0) -> list[Window]:
    """Windows a subscriber receives from the start of the relay's buffer until the insert of row
    ``marker_id`` into :data:`MARKER` arrived, capture stopped, or ``timeout`` seconds passed (the
    caller compares what came)."""
    sub = Subscriber([url], None, wait_ms=300, max_bytes=16 << 20, backoff_max=0.5, timeout=30)
    out: list[Window] = []
    done = False
    deadline = time.monotonic() + timeout
    try:
        while not done and time.monotonic() < deadline:
            for w in sub.windows(idle_exit=1.0):
                out.append(w)
                done = any(e.table == MARKER and (e.after or {}).get("id") == marker_id for e in w.events)
                if done:
                    break
            if not done and not healthy(url)[0]:
                break  # capture stopped: nothing more will come
    finally:
        sub.close()
    return out


# -- comparison -------------------------------------------------------------------------------------


def _sig(op: str, table: str) -> str:
    return f"{op}:{table}"


def row_columns(row: dict[str, Any] | None) -> dict[str, Any]:
    """A delivered row without the relay's unchanged-TOAST marker column."""
    return {k: v for k, v in (row or {}).items() if k != UNCHANGED_COLUMN}


@dataclass
class Comparison:
    """The outcome of comparing the relay's windows with test_decoding's transactions."""

    mismatches: list[str] = field(default_factory=list)
    compared_changes: int = 0
    compared_values: int = 0
    #: values of stored generated columns, which are not in events by decision (not compared)
    generated_values: int = 0

    def add(self, where: str, what: str) -> None:
        self.mismatches.append(f"{where}: {what}")

    def summary(self, per_table: int = 4) -> str:
        """Capture stops first, then per table the count and the first few of its mismatches."""
        out = [m[:800] for m in self.mismatches if m.startswith("relay:")]
        by_table: dict[str, list[str]] = {}
        for m in self.mismatches:
            if not m.startswith("relay:"):
                found = re.search(r"table ([\w.\"]+(?:, [\w.\"]+)*):|^([\w.]+) final|'[a-z]:([\w.]+)'", m)
                table = next((g for g in found.groups() if g), "?") if found else "?"
                by_table.setdefault(table, []).append(m)
        for table, ms in by_table.items():
            out.append(f"-- {table}: {len(ms)} mismatches")
            out += [m[:500] for m in ms[:per_table]]
        return "\n".join(out)


class Comparer:
    """Compares relay events with test_decoding changes; ``types`` maps domain names to base types,
    ``keys`` gives the key columns of tables whose event keys are checked."""

    def __init__(
        self,
        types: dict[str, str] | None = None,
        keys: dict[str, Sequence[str]] | None = None,
        generated: dict[str, set[str]] | None = None,
    ) -> None:
        self.types = types or {}
        self.generated = generated or {}
        self.keys = {t: list(k) for t, k in (keys or {}).items()}
        self.result = Comparison()
        self._shape: dict[str, tuple[tuple[str, str], ...]] = {}  # table → columns and types last seen
        self._flagged: set[str] = set()  # tables with a schema_changed event since their shape was seen
        self._moved: set[int] = set()  # ids of UPDATE events that came after the DELETE of their old key
        self._moved_flagged: set[int] = set()  # … whose DELETE said schema_changed

    def _base(self, typ: str) -> str:
        return self.types.get(typ, typ)

    def _value(self, where: str, col: str, typ: str, got: Any, want: str | None) -> None:
        self.result.compared_values += 1
        if _DUMP:
            with open(_DUMP, "a") as f:
                f.write(f"{where[:60]}\t{col}\t{typ}\t{got!r:.200}\t{want!r:.200}\n")
        if not same_value(got, self._base(typ), want):
            try:
                shown = pg_text(got, self._base(typ))
            except TypeError as exc:
                shown = f"<{exc}>"
            self.result.add(where, f"column {col} [{typ}]: delivered {got!r} (as text {shown!r}), PostgreSQL {want!r}")

    def change(self, where: str, td: TdChange, ev: ChangeEvent) -> None:
        self.result.compared_changes += 1
        if ev.table != td.table or ev.op.value != td.op:
            self.result.add(where, f"delivered {ev.op.value} on {ev.table}, PostgreSQL {td.op} on {td.table}")
            return
        if getattr(ev, "schema_changed", True) or id(ev) in self._moved_flagged:
            self._flagged.add(td.table)
        if td.op == "t":
            if ev.before is not None or ev.after is not None or ev.key not in ([], None):
                self.result.add(where, f"truncate event carries data: key {ev.key} {ev.before} {ev.after}")
            return
        # the relay's markers travel beside the row (ChangeEvent.unchanged): a user column of the
        # marker's preferred name is the user's
        after = dict(ev.after or {})
        if td.new is not None:  # a schema change must reach the subscriber (on the first event in it)
            shape = tuple((col, td.types.get(col, "?")) for col in td.new)
            seen = self._shape.get(td.table)
            if seen is not None and seen != shape and td.table not in self._flagged:
                self.result.add(where, f"the table's columns changed ({seen} → {shape}), no event said schema_changed")
            self._shape[td.table] = shape
            self._flagged.discard(td.table)
            unchanged = set(ev.unchanged)
            extra = set(after) - set(td.new)
            if extra:
                self.result.add(where, f"after image has columns PostgreSQL does not: {sorted(extra)}")
            absent = self.generated.get(td.table, set())
            for col in absent & set(after):
                self.result.add(where, f"after.{col} is a stored generated column, which pgoutput never sends")
            for col, want in td.new.items():
                if col in absent:
                    self.result.generated_values += 1
                    continue
                if col not in after:
                    self.result.add(where, f"after.{col} missing (delivered {sorted(after)})")
                    continue
                if want == UNCHANGED_TOAST:
                    if td.old is not None and col in td.old:  # REPLICA IDENTITY FULL: the old row has it
                        self._value(where, f"after.{col}", td.types.get(col, "?"), after[col], td.old[col])
                    elif after[col] is not None or col not in unchanged:
                        self.result.add(
                            where, f"after.{col} is unchanged TOAST, delivered {after[col]!r} not marked {unchanged}"
                        )
                    continue
                if col in unchanged:
                    self.result.add(where, f"after.{col} marked unchanged, PostgreSQL sent {want!r}")
                self._value(where, f"after.{col}", td.types.get(col, "?"), after[col], want)
        elif ev.after is not None:
            self.result.add(where, f"delete carries an after image {ev.after}")
        if td.old is not None:
            before = dict(ev.before or {})
            if ev.before is None:
                self.result.add(where, f"before image missing; PostgreSQL has old {td.old}")
            else:
                for col, want in td.old.items():
                    if col not in before:
                        self.result.add(where, f"before.{col} missing (delivered {sorted(before)})")
                    else:
                        self._value(where, f"before.{col}", td.types.get(col, "?"), before[col], want)
                for col, v in before.items():  # test_decoding leaves out NULLs of the old row
                    if col not in td.old and v is not None and col in td.types:
                        self.result.add(where, f"before.{col} = {v!r}, PostgreSQL's old row has no value there")
        key_cols = self.keys.get(td.table)
        if key_cols is not None:
            src = td.new if td.op in ("c", "u") else td.old
            want_key = [(src or {}).get(k) for k in key_cols]
            for n, k in enumerate(key_cols):  # an unchanged TOASTed key: PostgreSQL logs it in the old key
                if want_key[n] == UNCHANGED_TOAST:
                    want_key[n] = (td.old or {}).get(k, UNCHANGED_TOAST)
            types = [self._base(td.types.get(k, "?")) for k in key_cols]
            got_key = list(ev.key or [])
            if len(got_key) != len(want_key) or not all(
                same_value(g, t, w) for g, t, w in zip(got_key, types, want_key, strict=False)
            ):
                self.result.add(where, f"key {got_key!r}, PostgreSQL's primary key {want_key!r}")
            if td.op == "u" and td.old is not None and all(k in td.old for k in key_cols):
                moved = [td.old[k] for k in key_cols] != want_key
                if moved != (id(ev) in self._moved):
                    self.result.add(
                        where,
                        f"key {[td.old[k] for k in key_cols]} → {want_key}: "
                        + ("no DELETE of the old key first" if moved else "a DELETE of a key that did not change"),
                    )

    def _key_moves(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """The events without the DELETE of the old key that starts a key-changing UPDATE (docs/
        relay-wire-format.md: a ``d`` under the old key with the update's ``before``, then the ``u``);
        such updates are remembered, so :meth:`change` can require them where the key changed."""
        out: list[ChangeEvent] = []
        for k, e in enumerate(events):
            nxt = events[k + 1] if k + 1 < len(events) else None
            if (
                e.op.value == "d"
                and nxt is not None
                and nxt.op.value == "u"
                and nxt.table == e.table
                and nxt.scn == e.scn
                and not strict_eq(e.key, nxt.key)
                and e.before is not None
                and strict_eq(e.before, nxt.before)
            ):
                self._moved.add(id(nxt))
                if getattr(e, "schema_changed", False):  # the first event in a new schema was the DELETE
                    self._moved_flagged.add(id(nxt))
                continue
            out.append(e)
        return out

    def transactions(self, td_txns: list[list[TdChange]], windows: list[Window], only: Callable[[str], bool]) -> None:
        """Align ``td_txns`` (restricted to tables where ``only(table)``) with ``windows`` by commit order."""
        names: dict[str, set[tuple[str, str]]] = {}
        for c in (c for t in td_txns for c in t):
            names.setdefault(c.table, set()).add(c.qualified)
        for name, tables in names.items():
            if len(tables) > 1:
                self.result.add("tables", f"{sorted(tables)} all arrive as source {name!r}")
        scns = [w.scn for w in windows]
        if scns != sorted(set(scns)):
            self.result.add("windows", f"window SCNs do not strictly increase: {scns[:50]}")
        want = [[c for c in t if only(c.table)] for t in td_txns]
        want = [t for t in want if t]
        got = [self._key_moves(w.events) for w in windows]
        a = [tuple(_sig(c.op, c.table) for c in t) for t in want]
        b = [tuple(_sig(e.op.value, e.table) for e in t) for t in got]
        sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
        ops = [("equal", 0, len(a), 0, len(b))] if a == b else sm.get_opcodes()
        for tag, i1, i2, j1, j2 in ops:
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
                for i, j in zip(range(i1, i2), range(j1, j2), strict=True):
                    self._txn(i, want[i], got[j])
            else:
                for i in range(i1, i2):
                    self.result.add(f"txn {i}", f"not delivered: {[c.line[:160] for c in want[i][:5]]}")
                for j in range(j1, j2):
                    self.result.add(f"window scn {windows[j].scn}", f"no such transaction: {b[j][:5]}")

    def _txn(self, i: int, td: list[TdChange], events: list[ChangeEvent]) -> None:
        a = [_sig(c.op, c.table) for c in td]
        b = [_sig(e.op.value, e.table) for e in events]
        if a == b:  # the usual case; the matcher below is quadratic in a big transaction
            for k, (c, e) in enumerate(zip(td, events, strict=True)):
                self.change(f"txn {i} change {k} ({c.line[:100]})", c, e)
            return
        sm = difflib.SequenceMatcher(None, a, b, autojunk=False)
        for tag, i1, i2, j1, j2 in sm.get_opcodes():
            if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
                for k, m in zip(range(i1, i2), range(j1, j2), strict=True):
                    self.change(f"txn {i} change {k} ({td[k].line[:100]})", td[k], events[m])
            else:
                for k in range(i1, i2):
                    self.result.add(f"txn {i} change {k}", f"not delivered: {td[k].line[:200]}")
                for m in range(j1, j2):
                    e = events[m]
                    self.result.add(f"txn {i}", f"extra event {e.op.value} on {e.table} key {e.key}")


def apply_events(
    windows: list[Window], keys: dict[str, Sequence[str]]
) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    """A subscriber's copy of the tables in ``keys`` (rows keyed by their primary-key values as text),
    built from the delivered events; an unchanged TOASTed value keeps the copy's previous value."""
    copy: dict[str, dict[tuple[Any, ...], dict[str, Any]]] = {t: {} for t in keys}
    for w in windows:
        for e in w.events:
            rows = copy.get(e.table)
            if rows is None:
                continue
            if e.op.value == "t":
                rows.clear()
                continue
            kc = keys[e.table]
            old: dict[str, Any] = {}
            if e.before is not None and any(e.before.get(k) is not None for k in kc):
                old = rows.pop(tuple(pg_text(e.before.get(k), "") for k in kc), {})
            if e.after is not None:
                new = dict(e.after)
                unchanged = e.unchanged
                if not old:
                    k = tuple(pg_text(new.get(c), "") if c not in unchanged else None for c in kc)
                    old = rows.pop(k, {})
                for col in unchanged:
                    new[col] = old.get(col)
                rows[tuple(pg_text(new.get(c), "") for c in kc)] = new
            elif e.op.value == "d":
                rows.pop(tuple(pg_text(v, "") for v in e.key or []), None)
    return copy


def select_text(
    pg: PgServer, db: str, table: str, key: Sequence[str]
) -> tuple[dict[str, str], dict[tuple[Any, ...], dict[str, str | None]]]:
    """(column → type name, rows keyed by primary-key text) of ``table`` with every column as text."""
    with contextlib.closing(session(pg, db, raw=True)) as conn, conn.cursor() as cur:
        cur.execute(
            "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = %s::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            (table,),
        )
        types = dict(cur.fetchall())
        cols = list(types)
        q = ", ".join(f'"{c}"' for c in cols)
        cur.execute(f'SELECT {q} FROM "{table}"')
        rows = {}
        for r in cur.fetchall():
            row = dict(zip(cols, r, strict=True))
            rows[tuple(row[k] for k in key)] = row
        return types, rows


def compare_tables(
    pg: PgServer, db: str, windows: list[Window], keys: dict[str, Sequence[str]], comparer: Comparer
) -> None:
    """The subscriber's copy (from ``windows``) against ``SELECT col::text`` of each table in ``keys``."""
    copy = apply_events(windows, keys)
    for table, key in keys.items():
        types, rows = select_text(pg, db, table, key)
        got = copy[table]
        for k in sorted(set(rows) - set(got), key=repr)[:20]:
            comparer.result.add(f"{table} final", f"row {k} missing from the subscriber's copy")
        for k in sorted(set(got) - set(rows), key=repr)[:20]:
            comparer.result.add(f"{table} final", f"row {k} in the copy, not in the table")
        absent = comparer.generated.get(table, set())
        for k in set(rows) & set(got):
            for col, want in rows[k].items():
                if col in absent:
                    continue
                comparer._value(f"{table} final row {k}", col, types[col], got[k].get(col), want)


# -- one run: relay + test_decoding slot ------------------------------------------------------------


@dataclass
class Run:
    """A relay and a test_decoding slot on database ``db``, created one right after the other."""

    pg: PgServer
    db: str
    relay: Daemon
    url: str
    slot: str

    @property
    def td_slot(self) -> str:
        return f"{self.slot}_td"

    def finish(
        self,
        keys: dict[str, Sequence[str]],
        tables: Iterable[str] | None = None,
        timeout: float = 60.0,
        event_keys: dict[str, Sequence[str]] | None = None,
    ) -> tuple[Comparison, list[Window], list[list[TdChange]]]:
        """Read both witnesses and compare; asserts nothing (the caller does). ``keys``: tables whose
        final rows are compared, keyed by these columns; ``event_keys`` (default ``keys``): tables
        whose event keys must be these columns' values; ``tables``: compare only these (default all)."""
        [(marker_id,)] = self.pg.execute(
            f"INSERT INTO {MARKER} SELECT count(*) + 1 FROM {MARKER} RETURNING id", self.db
        )
        td = test_decoding_changes(self.pg, self.db, self.td_slot)
        only = {*tables, MARKER} if tables is not None else None

        def wanted(t: str) -> bool:
            return only is None or t in only

        windows = relay_windows(self.url, marker_id, timeout)
        comparer = Comparer(
            base_types(self.pg, self.db),
            keys if event_keys is None else event_keys,
            generated_columns(self.pg, self.db),
        )
        comparer.transactions(td, windows, wanted)
        compare_tables(self.pg, self.db, windows, {t: k for t, k in keys.items() if self._exists(t)}, comparer)
        ok, health = healthy(self.url)
        if not ok:  # first: every later "not delivered" follows from it
            comparer.result.mismatches.insert(0, f"relay: capture stopped: {health}")
        if not self.relay.alive():
            comparer.result.add("relay", f"the relay process exited: {self.relay.output()[-2000:]}")
        return comparer.result, windows, td

    def _exists(self, table: str) -> bool:
        return bool(self.pg.execute(f"SELECT 1 FROM pg_class WHERE relname = '{table}' AND relkind = 'r'", self.db))

    def close(self) -> None:
        self.relay.kill9()
        drop_database(self.pg, self.db)


def drop_database(pg: PgServer, db: str) -> None:
    """Drop ``db`` with its slots and prepared transactions (stop the processes using them first)."""
    for (gid,) in pg.execute(f"SELECT gid FROM pg_prepared_xacts WHERE database = '{db}'"):
        with contextlib.suppress(Exception):  # a workload that failed between PREPARE and COMMIT PREPARED
            pg.execute(f"ROLLBACK PREPARED '{gid}'", db)
    for (slot,) in pg.execute(f"SELECT slot_name FROM pg_replication_slots WHERE database = '{db}'"):
        with contextlib.suppress(Exception):
            pg.execute(f"SELECT pg_drop_replication_slot('{slot}')")
    with contextlib.suppress(Exception):
        pg.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def start_run(
    pg: PgServer,
    db: str,
    daemons: Any,
    tmp_path: Path,
    slot: str,
    tables: list[str] | None,
    postgres: dict[str, Any] | None = None,
    **relay: Any,
) -> Run:
    """Start a relay on ``db`` (it creates its slot and publication), then the test_decoding slot;
    ``postgres``: more ``relay.postgres`` settings."""
    pg.execute(f"CREATE TABLE {MARKER} (id int PRIMARY KEY)", db)
    d, url = start_relay(
        daemons, tmp_path, pg.url(db), name=f"relay-{slot}", tables=None if tables is None else [*tables, MARKER],
        postgres={"slot": slot, "publication": slot, **(postgres or {})}, **relay,
    )  # fmt: skip
    assert pg.execute(f"SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}'", db), "relay made no slot"
    pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}_td', 'test_decoding')", db)
    return Run(pg, db, d, url, slot)
