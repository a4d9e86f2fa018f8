"""Edge values of every PostgreSQL type class, as SQL literals, for the PostgreSQL conformance suite.

Each group becomes one database with one table per type, ``t_<name> (id int PRIMARY KEY, v <type>)``,
one row per literal (plus a NULL row). :func:`workload` writes the rows in small transactions,
then moves every value to another row in one UPDATE (so each value also travels in an update), and
deletes a few rows (old keys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Text in every Unicode plane PostgreSQL can store (UTF-8, no NUL, no surrogates).
UNICODE_SAMPLES = [
    "",
    " leading and trailing ",
    "quote ' double \" backslash \\ tab \t nl \n cr \r",
    "NULL",
    "Ä é ß ø ĳ ŉ ǅ",  # Latin supplements, a titlecase digraph
    "\u0080\u00a0\u00ad\u2028\u2029\ufeff\ufffd\uffff",  # C1, nbsp, soft hyphen, separators, BOM, U+FFFF
    "\u05e9\u05dc\u05d5\u05dd \u0645\u0631\u062d\u0628\u0627",  # right-to-left
    "e\u0301 a\u0308 \u1100\u1161\u11a8",  # combining marks, Hangul jamo
    "\U00010000 \U0001d11e \U0001f600 \U0001f9d1\u200d\U0001f4bb",  # plane 1: Linear B, music, emoji, ZWJ
    "\U00020000 \U0002a6d6 \U0002ffff",  # plane 2 (CJK ext B)
    "\U00030000 \U0003134a",  # plane 3
    "\U000e0001 \U000e0041 \U000e007f",  # plane 14 tags
    "\U000f0000 \U000fffff",  # plane 15 private use
    "\U00100000 \U0010ffff",  # plane 16, the last code point
    "\ue000 \uf8ff",  # BMP private use
    "x" * 3000 + "\U0010ffff",  # long (TOASTed when out of line)
]


def sql_str(s: str) -> str:
    """A standard SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


@dataclass(frozen=True)
class Column:
    """A type under test and its literals (SQL expressions)."""

    type: str
    literals: tuple[str, ...]
    name: str = ""

    @property
    def table(self) -> str:
        return "t_" + (self.name or re.sub(r"[^a-z0-9]+", "_", self.type.lower().replace("[]", " arr")).strip("_"))


def _lits(*values: str) -> tuple[str, ...]:
    return tuple(sql_str(v) for v in values)


NUMERIC_1000_DIGITS = "9" * 600 + "." + "1234567890" * 40
GROUPS: dict[str, list[Column]] = {
    "integers": [
        Column("smallint", ("-32768", "32767", "0", "-1")),
        Column("integer", ("-2147483648", "2147483647", "0")),
        Column("bigint", ("-9223372036854775808", "9223372036854775807", "0", "4294967296")),
        Column("oid", ("0", "4294967295")),
    ],
    "numeric": [
        Column(
            "numeric",
            _lits(
                "0",
                "-1.5",
                "1.500000",
                "0.000000000000000000000000000001",
                "1e1000",
                "-1e-1000",
                NUMERIC_1000_DIGITS,
                "-" + NUMERIC_1000_DIGITS,
                "123456789012345678901234567890.123456789012345",
                "NaN",
                "Infinity",
                "-Infinity",
                "9" * 131072,
                "0." + "0" * 16382 + "1",
            ),
        ),
        Column("numeric(38,10)", _lits("9999999999999999999999999999.9999999999", "-0.0000000001", "0")),
        Column("numeric(30,2)", _lits("1234567890123456789012345678.91", "NaN", "-0.01")),
        Column("numeric(1000,0)", _lits("9" * 1000, "-" + "9" * 1000)),
        Column("numeric(1000,500)", _lits("9" * 500 + "." + "9" * 500, "0." + "0" * 499 + "1")),
        Column("numeric(5,-2)", _lits("1234567", "-99900"), name="numeric_5_neg2"),
        Column("numeric(3,5)", _lits("0.00123", "-0.00999")),
    ],
    "floats": [
        Column(
            "double precision",
            _lits(
                "NaN",
                "Infinity",
                "-Infinity",
                "-0",
                "0",
                "5e-324",
                "-4.9e-324",
                "2.2250738585072009e-308",
                "2.2250738585072014e-308",
                "1.7976931348623157e308",
                "-1.7976931348623157e308",
                "0.1",
                "0.30000000000000004",
                "1e23",
                "1e15",
                "1e16",
                "123456789012345.67",
                "9007199254740993",
                "3.141592653589793",
            ),
        ),
        Column(
            "real",
            _lits(
                "NaN",
                "Infinity",
                "-Infinity",
                "-0",
                "1e-45",
                "1.1754942e-38",
                "1.17549435e-38",
                "3.4028235e38",
                "-3.4028235e38",
                "0.1",
                "16777217",
                "8.589973e9",
                "1e6",
                "123456",
            ),
        ),
    ],
    "text": [
        Column("text", tuple(sql_str(s) for s in UNICODE_SAMPLES)),
        Column("character varying(12)", _lits("", "twelve chars", "ü" * 12, "\U0001f600" * 12), name="varchar12"),
        Column("character(5)", _lits("", "ab", "abcde", "é", " x "), name="char5"),
        Column('"char"', _lits("a", "", "Z"), name="char1"),
        Column("name", _lits("a name", "x" * 63)),
    ],
    "binary_bool_uuid": [
        Column(
            "bytea",
            (
                *_lits("\\x", "\\x00", "\\x0000", "\\x6100", "\\xff00", "\\x" + "00ff" * 500 + "00"),
                "decode(repeat('00ff17', 349525) || '0000', 'hex')",  # 1 MiB, trailing zeros
            ),
        ),
        Column("boolean", ("true", "false")),
        Column(
            "uuid",
            _lits(
                "00000000-0000-0000-0000-000000000000",
                "ffffffff-ffff-ffff-ffff-ffffffffffff",
                "12345678-9abc-def0-1234-56789abcde00",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
            ),
        ),
    ],
    "datetime": [
        Column(
            "date",
            _lits(
                "4714-11-24 BC",
                "0044-03-15 BC",
                "0001-12-31 BC",
                "0001-01-01",
                "1970-01-01",
                "2024-02-29",
                "9999-12-31",
                "10000-01-01",
                "5874897-12-31",
                "infinity",
                "-infinity",
            ),
        ),
        Column(
            "timestamp",
            _lits(
                "4714-11-24 00:00:00 BC",
                "0044-03-15 12:00:00.5 BC",
                "0001-01-01 00:00:00",
                "1999-12-31 23:59:59.5",
                "2000-01-01 00:00:00.000001",
                "9999-12-31 23:59:59.999999",
                "10000-01-01 00:00:00",
                "294276-12-31 23:59:59.999999",
                "infinity",
                "-infinity",
            ),
        ),
        Column(
            "timestamptz",
            _lits(
                "4714-11-24 00:00:00+00 BC",
                "0001-01-01 00:00:00+00",
                "2024-03-10 02:30:00.25-05",
                "1970-01-01 00:00:00+14",
                "9999-12-31 23:59:59.999999+00",
                "9999-12-31 23:00:00-05",
                "294276-12-31 23:59:59.999999+00",
                "infinity",
                "-infinity",
            ),
        ),
    ],
    "time_interval": [
        Column("time", _lits("00:00:00", "23:59:59.999999", "24:00:00", "12:34:56.000001", "12:00:00.5")),
        Column(
            "timetz",
            _lits("00:00:00+1559", "24:00:00-1559", "12:00:00.123456+05:30", "23:59:59.999999+00", "10:00:00+05:30:15"),
        ),
        Column(
            "interval",
            _lits(
                "0",
                "178000000 years",
                "-178000000 years",
                "1 mon -1 day",
                "-1 mon 2 days -03:04:05.678",
                "1 year 2 mons 3 days 04:05:06.5",
                "00:00:00.000001",
                "-00:00:00.000001",
                "2147483647 days",
                "-2147483648 days",
                "2147483647 mons",
                "2562047788:00:54.775807",
                "-1 day +00:00:00.5",
                "1 mon 2147483647 days 2562047788:00:54.775807",
            ),
        ),
    ],
    "json": [
        Column(
            "json",
            _lits(
                "1.0000000000000000001",
                "123456789012345678901234567890",
                "null",
                '"\\u00e9\\ud83d\\ude00"',
                '{"a": [1, 2.50, {"b": null}], "c": "x"}',
                "[]",
                "{}",
                "true",
                "1e400",
                '{"a":1,"a":2}',
                '"\\u0000 nul escape"',
                " [1,\n 2] ",
                "-0",
                '{"k": 1.0, "k2": 1}',
            ),
        ),
        Column(
            "jsonb",
            _lits(
                "1.0000000000000000001",
                "123456789012345678901234567890",
                "null",
                '"\\u00e9\\ud83d\\ude00"',
                '{"a": [1, 2.50, {"b": null}], "c": "x"}',
                "[]",
                "{}",
                "false",
                "1e400",
                '{"a":1,"a":2}',
                '{"deep": [[[[[[[[[[1]]]]]]]]]]}',
                "-0",
                '{"k": 1.0, "k2": 1}',
                '"\U0010ffff"',
            ),
        ),
    ],
    "arrays": [
        Column(
            "integer[]",
            _lits(
                "{}",
                "{NULL}",
                "{1,NULL,3}",
                "{-2147483648,2147483647}",
                "{{1,2},{3,4}}",
                "{{{1,2},{3,4}},{{5,6},{7,8}}}",
                "[0:1]={1,2}",
                "[-5:-4][1:1]={{1},{2}}",
                "{{NULL,NULL}}",
            ),
        ),
        Column(
            "text[]",
            _lits(
                '{"a b","c,d",NULL,"NULL","","q\\"x","back\\\\slash","{}"," "}',
                "{{a,b},{c,NULL}}",
                '{"\U0001f600","\U0010ffff"}',
                # Unicode spaces and separators next to unquoted elements: PostgreSQL quotes (and trims)
                # only ASCII whitespace, so these are part of the element
                "{\xa0,\xa0x\xa0,\x1c\x1d\x1e\x1f,\x85y,\u2028z\u2029,\u3000,\ufeff}",
                "{}",
            ),
        ),
        Column("numeric[]", _lits("{1.50,NaN,-0.001,Infinity}", "{{1,2},{3,4}}", "{1e100}")),
        Column("double precision[]", _lits("{NaN,Infinity,-Infinity,-0,5e-324,1.7976931348623157e308}", "{0.1}")),
        Column("real[]", _lits("{NaN,-0,1e-45,3.4028235e38}")),
        Column("date[]", _lits("{infinity,-infinity,0044-03-15 BC,2024-01-01,10000-01-01}", "{2024-01-01}")),
        Column("timestamptz[]", _lits("{2024-01-01 10:00:00+02,infinity}", '{"2024-01-01 10:00:00.5+00"}')),
        Column("timestamp[]", _lits('{"2024-01-01 10:00:00"}', '{"0044-03-15 12:00:00 BC"}')),
        Column("boolean[]", _lits("{t,f,NULL}")),
        Column("bytea[]", _lits('{"\\\\x00","\\\\x",NULL}')),
        Column("uuid[]", _lits("{00000000-0000-0000-0000-000000000000,NULL}")),
        Column("interval[]", _lits('{"1 year 2 mons","-00:00:00.000001"}', '{"178000000 years"}')),
        Column("character varying[]", _lits('{"",x,"y z"}'), name="varchar_arr"),
        Column("jsonb[]", _lits('{"{\\"a\\": 1.0000000000000000001}",null}')),
        Column("time[]", _lits('{"24:00:00","00:00:00.5"}')),
    ],
    "other": [
        Column("mood", _lits("sad", "very happy", "naïve ' \" \\", "\U0001f600")),
        Column("mood[]", _lits('{sad,"very happy"}', "{}", '{"NULL",NULL,"naïve \' \\" \\\\"}')),
        Column("posint[]", _lits("{1,NULL,2147483647}", "{{1,2},{3,4}}"), name="posint_arr"),
        Column("intarr", _lits("{1,NULL}", "[2:3]={5,6}")),
        Column("hstore", _lits('a=>1, "b c"=>NULL, "q\\"x"=>"\U0001f600"', "")),
        Column("citext", _lits("MiXeD Case", "")),
        Column("ltree", _lits("top.science.astronomy", "")),
        Column("cube", _lits("(1, 2, 3)", "(1e-300),(1e300)")),
        Column("isbn13", _lits("978-0-393-04002-9")),
        Column("posint", ("1", "2147483647")),
        Column("label", _lits("domain text")),
        Column("money2", _lits("12345678.91", "-0.01")),
        Column("bit(8)", _lits("10101010", "00000000")),
        Column("bit varying", _lits("", "1", "0" * 1000 + "1")),
        Column("inet", _lits("192.168.0.1/24", "192.168.0.1", "::1", "2001:db8::1/64")),
        Column("cidr", _lits("10.0.0.0/8", "2001:db8::/32")),
        Column("macaddr", _lits("08:00:2b:01:02:03")),
        Column("macaddr8", _lits("08:00:2b:01:02:03:04:05")),
        Column("money", _lits("-92233720368547758.08", "92233720368547758.07", "0")),
        Column("point", _lits("(1,2)", "(NaN,Infinity)", "(-0,1e-300)")),
        Column("line", _lits("{1,2,3}")),
        Column("lseg", _lits("[(0,0),(1,1)]")),
        Column("box", _lits("(1,1),(0,0)")),
        Column("path", _lits("[(0,0),(1,1),(2,0)]", "((0,0),(1,1))")),
        Column("polygon", _lits("((0,0),(1,1),(1,0))")),
        Column("circle", _lits("<(0,0),1.5>")),
        Column("tsvector", _lits("a fat cat sat on a mat", "'it''s':1A 'x':2,3B")),
        Column("tsquery", _lits("fat & (rat | !cat)")),
        Column("xml", _lits('<a b="c">d &amp; e</a>', "text node", '<?xml version="1.0"?><x/>')),
        Column("int4range", _lits("[1,10)", "empty", "(,)", "[,5]")),
        Column("numrange", _lits("[1.5,2.25]", "(,)")),
        Column("tstzrange", _lits("[2024-01-01 00:00:00+00,infinity)", "empty")),
        Column("daterange", _lits("[0044-03-15 BC,10000-01-01)")),
        Column("int4multirange", _lits("{[1,3),[5,7)}", "{}")),
        Column("pair", _lits('(1,"x y")', "(,)", '(2,"")')),
        Column("pair[]", _lits('{"(1,a)",NULL,"(,)"}')),
        Column("pg_lsn", _lits("0/0", "FFFFFFFF/FFFFFFFF")),
    ],
}

#: Types a group needs created first.
SETUP: dict[str, str] = {
    "other": """
        CREATE TYPE mood AS ENUM ('sad', 'ok', 'very happy', 'naïve '' " \\', '\U0001f600', 'NULL');
        CREATE DOMAIN intarr AS int[];
        CREATE EXTENSION hstore; CREATE EXTENSION citext; CREATE EXTENSION ltree; CREATE EXTENSION cube;
        CREATE EXTENSION isn;
        CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
        CREATE DOMAIN label AS text NOT NULL DEFAULT 'x';
        CREATE DOMAIN money2 AS numeric(10,2);
        CREATE TYPE pair AS (a int, b text);
    """,
}


def tables(group: str) -> list[str]:
    return [c.table for c in GROUPS[group]]


def create(group: str, identity: str = "default") -> str:
    """DDL of a group's tables (and types). ``identity``: ``default`` (a primary key), ``full`` (and
    ``REPLICA IDENTITY FULL``, so every UPDATE and DELETE also carries each value in its old row), or
    ``full_nopk`` (FULL without a primary key: every column, each edge value, is part of the key)."""
    ddl = [SETUP.get(group, "")]
    pk = "" if identity == "full_nopk" else " PRIMARY KEY"
    for c in GROUPS[group]:
        null_ok = c.type != "label"
        ddl.append(f"CREATE TABLE {c.table} (id int{pk}, v {c.type}{'' if null_ok else ' NOT NULL'});")
        if identity != "default":
            ddl.append(f"ALTER TABLE {c.table} REPLICA IDENTITY FULL;")
    return "\n".join(ddl)


def workload(group: str) -> list[str]:
    """The group's transactions, each one SQL string (run in autocommit mode, BEGIN … COMMIT inside)."""
    txns: list[str] = []
    for c in GROUPS[group]:
        rows = [f"({i}, {lit})" for i, lit in enumerate(c.literals, start=1)]
        if c.type != "label":
            rows.append(f"({len(rows) + 1}, NULL)")
        for start in range(0, len(rows), 4):
            txns.append(f"BEGIN; INSERT INTO {c.table} VALUES {', '.join(rows[start : start + 4])}; COMMIT;")
        n = len(rows)
        # every value moves to the next row (ids 1..n rotate); one statement, so one transaction
        txns.append(
            f"UPDATE {c.table} t SET v = s.v FROM {c.table} s WHERE s.id = t.id % {n} + 1;"
            if n > 1
            else f"UPDATE {c.table} SET v = v;"
        )
        txns.append(f"DELETE FROM {c.table} WHERE id = 1;")
    return txns
