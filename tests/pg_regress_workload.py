"""A workload with the shapes of PostgreSQL's own logical-decoding regression tests
(``contrib/test_decoding/sql/``: ddl, toast, truncate, prepared, replorigin, xact, messages, spill),
written for the headrace conformance suite; nothing here is copied from those files.

Shapes: DDL between changes and inside transactions (ADD/DROP/RENAME COLUMN, ALTER COLUMN TYPE with
a table rewrite, RENAME TABLE, a primary key added later), tables with and without primary keys,
``REPLICA IDENTITY`` FULL / USING INDEX (also next to a different primary key), key updates,
TOASTed values (large incompressible text stored out of line, compressed out-of-line values, a
TOASTed primary key, an old row larger than a heap tuple, updates that leave TOASTed values alone,
``INSERT … ON CONFLICT``, COPY), TRUNCATE (one table, several, RESTART IDENTITY CASCADE, inside a
mixed transaction), savepoints released and rolled back (80 nested), two-phase transactions
committed and rolled back (also one holding DDL, committed after a later transaction), a
replication origin, logical messages, a row lock before the first change, a transaction large enough
to spill to disk, a table in another schema, columns whose names collide after Avro sanitising,
catalog and table rewrites (VACUUM FULL, CLUSTER, REINDEX) between changes, a FULL-identity table
whose primary key changes and which is dropped, a partitioned table (a row
moving between partitions, a partition attached later), stored generated and identity columns, user
types changed while in use (enum labels added and renamed, a composite type's attribute added),
columns added with a default to rows already there, DDL that changes untouched rows' values, a
table named ``"s3.rx"`` next to table ``rx`` of schema ``s3``, a user column named like the relay's
unchanged-TOAST marker.

The steps come in :data:`SECTIONS`; a test runs groups of them, each through its own relay, so a
capture stop in one shape does not hide the others.

Every step is one SQL string run on an autocommit connection (``BEGIN … COMMIT`` inside when the
step is a transaction), or a callable given the cursor. :data:`KEYS` lists tables whose primary key
never changes, with its key columns — the primary key, or the replica identity index where there is
one (their event keys and final rows are checked).
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

Step = str | Callable[[Any], None]

_ALNUM = string.ascii_letters + string.digits


def noise(rng: random.Random, n: int) -> str:
    """Text pglz cannot compress: stored out of line uncompressed once above the TOAST threshold."""
    return "".join(rng.choices(_ALNUM, k=n))


def ddl_steps() -> list[Step]:
    return [
        "CREATE TABLE rx (id serial PRIMARY KEY, somedata int, text varchar(120));",
        "BEGIN; INSERT INTO rx (somedata, text) VALUES (1, 1); INSERT INTO rx (somedata, text) VALUES (1, 2); COMMIT;",
        "ALTER TABLE rx ADD COLUMN bar int;",
        "INSERT INTO rx (somedata, text, bar) VALUES (2, 1, 4);",
        "BEGIN; INSERT INTO rx (somedata, text, bar) VALUES (2, 2, 4), (2, 3, NULL); COMMIT;",
        "ALTER TABLE rx DROP COLUMN bar;",
        "INSERT INTO rx (somedata, text) VALUES (3, 1);",
        "ALTER TABLE rx RENAME COLUMN text TO somenum;",
        "INSERT INTO rx (somedata, somenum) VALUES (4, 1);",
        "ALTER TABLE rx ALTER COLUMN somenum TYPE int4 USING (somenum::int4);",  # rewrites the table
        "INSERT INTO rx (somedata, somenum) VALUES (5, 1);",
        # columns added between the changes of one transaction
        """BEGIN;
           INSERT INTO rx (somedata, somenum) VALUES (6, 1);
           ALTER TABLE rx ADD COLUMN z1 int;
           INSERT INTO rx (somedata, somenum, z1) VALUES (6, 2, 1);
           ALTER TABLE rx ADD COLUMN z2 int;
           INSERT INTO rx (somedata, somenum, z2) VALUES (6, 3, 1);
           INSERT INTO rx (somedata, somenum, z1) VALUES (6, 4, 2);
           COMMIT;""",
        # a column's type changed twice and a column dropped inside one transaction, rows between
        """BEGIN;
           INSERT INTO rx (somedata, somenum) VALUES (7, 1);
           ALTER TABLE rx ALTER COLUMN somedata TYPE numeric(20,5);
           INSERT INTO rx (somedata, somenum) VALUES (7.12345, 2);
           UPDATE rx SET somedata = somedata + 0.5 WHERE id = 1;
           ALTER TABLE rx ALTER COLUMN somedata TYPE text;
           INSERT INTO rx (somedata, somenum) VALUES ('seven', 3);
           ALTER TABLE rx DROP COLUMN z1;
           DELETE FROM rx WHERE id = 2;
           INSERT INTO rx (somedata, somenum, z2) VALUES ('eight', 4, 8);
           COMMIT;""",
        "UPDATE rx SET id = -id WHERE id = 3;",  # primary key update
        # tables created and filled inside a transaction, a text primary key, key updates
        """BEGIN;
           CREATE TABLE tr_many (id serial PRIMARY KEY, data int);
           INSERT INTO tr_many (data) SELECT g FROM generate_series(1, 3000) g;
           DELETE FROM tr_many WHERE id < 1000;
           UPDATE tr_many SET data = -data WHERE id > 2000;
           CREATE TABLE tr_oddlength (id text PRIMARY KEY, data text);
           INSERT INTO tr_oddlength VALUES ('ab', 'foo');
           COMMIT;""",
        """BEGIN;
           CREATE TABLE spoolme (i int PRIMARY KEY);
           INSERT INTO spoolme SELECT g FROM generate_series(1, 500) g;
           UPDATE tr_many SET id = -id WHERE id = 2500;
           UPDATE tr_oddlength SET id = 'x', data = 'quux';
           UPDATE tr_oddlength SET id = 'yy', data = 'a';
           DELETE FROM spoolme;
           DROP TABLE spoolme;
           COMMIT;""",
        # a user catalog table
        "CREATE TABLE ucat (id serial PRIMARY KEY, relation name NOT NULL, options text[]) "
        "WITH (user_catalog_table = true);",
        "INSERT INTO ucat (relation, options) VALUES ('foo', ARRAY['a', 'b']);",
        "ALTER TABLE ucat RESET (user_catalog_table);",
        "INSERT INTO ucat (relation, options) VALUES ('bar', NULL);",
        # another schema; names that collide after Avro sanitising; a quoted table name
        "CREATE SCHEMA s2; CREATE TABLE s2.rx (id int PRIMARY KEY, v text);",
        "INSERT INTO s2.rx VALUES (1, 'other schema');",
        'CREATE TABLE "Odd Table" ("a-b" int PRIMARY KEY, a_b text, "A_B" text, "1x" int);',
        """INSERT INTO "Odd Table" VALUES (1, 'a_b', 'A_B', 7);""",
        """UPDATE "Odd Table" SET a_b = 'changed', "A_B" = NULL;""",
    ]


def rewrite_steps() -> list[Step]:
    """Catalog and table rewrites (VACUUM FULL, CLUSTER) between changes and around DDL."""
    return [
        "CREATE TABLE rw (id serial PRIMARY KEY, somedata int, big text);",
        "INSERT INTO rw (somedata, big) VALUES (1, repeat(md5('rw'), 300));",
        "BEGIN; INSERT INTO rw (somedata) VALUES (2); ALTER TABLE rw ADD COLUMN c1 int; "
        "INSERT INTO rw (somedata, c1) VALUES (3, 1); COMMIT;",
        "VACUUM FULL pg_class;",
        "VACUUM FULL pg_attribute;",
        "VACUUM FULL pg_type;",
        "BEGIN; CLUSTER pg_class USING pg_class_oid_index; CLUSTER pg_class USING pg_class_oid_index; ROLLBACK;",
        "BEGIN; CLUSTER pg_class USING pg_class_oid_index; COMMIT;",
        "REINDEX TABLE pg_class;",
        "INSERT INTO rw (somedata, c1) VALUES (4, 2);",
        "VACUUM FULL rw;",
        "UPDATE rw SET somedata = -somedata;",
        "BEGIN; INSERT INTO rw (somedata, c1) VALUES (5, 3); ALTER TABLE rw ADD COLUMN c2 int; "
        "INSERT INTO rw (somedata, c1, c2) VALUES (6, 4, 1); COMMIT;",
        "CLUSTER rw USING rw_pkey;",
        "DELETE FROM rw WHERE somedata = -1;",
    ]


def subxact_steps() -> list[Step]:
    steps: list[Step] = [
        "CREATE TABLE tr_sub (id serial PRIMARY KEY, path text);",
        """BEGIN;
           INSERT INTO tr_sub (path) VALUES ('1-top-#1');
           SAVEPOINT a;
           INSERT INTO tr_sub (path) VALUES ('1-top-1-#1');
           INSERT INTO tr_sub (path) VALUES ('1-top-1-#2');
           RELEASE SAVEPOINT a;
           SAVEPOINT b;
           SAVEPOINT c;
           INSERT INTO tr_sub (path) VALUES ('1-top-2-1-#1');
           RELEASE SAVEPOINT c;
           INSERT INTO tr_sub (path) VALUES ('1-top-2-#1');
           RELEASE SAVEPOINT b;
           COMMIT;""",
        "BEGIN; SAVEPOINT top; "
        + "SAVEPOINT a; " * 80
        + "INSERT INTO tr_sub (path) VALUES ('2-deep-#1'), ('2-deep-#2'); RELEASE SAVEPOINT top; "
        "INSERT INTO tr_sub (path) VALUES ('2-top-#1'); COMMIT;",
        """BEGIN;
           INSERT INTO tr_sub (path) VALUES ('3-top-#1');
           SAVEPOINT a;
           INSERT INTO tr_sub (path) VALUES ('3-rolled-back-#1');
           UPDATE tr_sub SET path = 'rolled back' WHERE id = 1;
           SAVEPOINT b;
           INSERT INTO tr_sub (path) VALUES ('3-rolled-back-#2');
           ROLLBACK TO SAVEPOINT a;
           INSERT INTO tr_sub (path) VALUES ('3-top-#2');
           COMMIT;""",
        "BEGIN; INSERT INTO tr_sub (path) VALUES ('4-rolled-back'); ROLLBACK;",
        "BEGIN; SELECT txid_current(); SAVEPOINT a; INSERT INTO tr_sub (path) VALUES ('5-sub'); "
        "RELEASE SAVEPOINT a; COMMIT;",
        "BEGIN; SAVEPOINT a; INSERT INTO tr_sub (path) VALUES ('6-sub-only'); COMMIT;",
        # a row lock assigns the xid before the first change, in the top transaction
        "BEGIN; SELECT * FROM tr_sub WHERE id = 1 FOR UPDATE; SAVEPOINT s; "
        "INSERT INTO tr_sub (path) VALUES ('7-after-lock'); COMMIT;",
        # logical messages next to changes, and alone (no row change: nothing for a subscriber)
        "BEGIN; INSERT INTO tr_sub (path) VALUES ('8-with-message'); "
        "SELECT pg_logical_emit_message(true, 'headrace', 'transactional'); COMMIT;",
        "SELECT pg_logical_emit_message(false, 'headrace', 'not transactional');",
    ]
    return steps


def prepared_steps(prepared: bool) -> list[Step]:
    steps: list[Step] = []
    if prepared:
        steps += [
            "CREATE TABLE tp1 (id int); ALTER TABLE tp1 REPLICA IDENTITY FULL; CREATE TABLE tp2 (id int PRIMARY KEY);",
            "BEGIN; INSERT INTO tp1 VALUES (1); PREPARE TRANSACTION 'hr_p1';",
            "COMMIT PREPARED 'hr_p1';",
            "BEGIN; INSERT INTO tp1 VALUES (3); PREPARE TRANSACTION 'hr_p2';",
            "ROLLBACK PREPARED 'hr_p2';",
            "INSERT INTO tp1 VALUES (4);",
            "BEGIN; INSERT INTO tp1 VALUES (5); ALTER TABLE tp1 ADD COLUMN data text; "
            "INSERT INTO tp1 VALUES (6, 'with ddl'); PREPARE TRANSACTION 'hr_p3';",
            "INSERT INTO tp2 VALUES (7);",  # commits before the prepared transaction above
            "COMMIT PREPARED 'hr_p3';",
            "INSERT INTO tp1 VALUES (8, NULL); INSERT INTO tp2 VALUES (9); UPDATE tp1 SET data = 'x' WHERE id = 8;",
            "DELETE FROM tp1 WHERE id = 1;",
        ]
    return steps


def identity_full_steps() -> list[Step]:
    return [
        # no primary key, REPLICA IDENTITY FULL, NULLs in the old rows
        "CREATE TABLE nokey_full (id serial, data int, note text); ALTER TABLE nokey_full REPLICA IDENTITY FULL;",
        "INSERT INTO nokey_full (data, note) VALUES (1, NULL), (2, 'two'), (NULL, NULL);",
        "DELETE FROM nokey_full WHERE data = 1;",
        "UPDATE nokey_full SET data = 3 WHERE data = 2;",
        "UPDATE nokey_full SET id = -id;",
        "UPDATE nokey_full SET note = 'was all null' WHERE data IS NULL;",
        "ALTER TABLE nokey_full ADD COLUMN new_column text;",
        "UPDATE nokey_full SET id = -id, new_column = 'someval';",
        "DELETE FROM nokey_full WHERE data = 3;",
        # FULL on columns without an equality operator (json, point, xml), TOASTed and NULL values
        "CREATE TABLE full_types (id int, j json, p point, x xml, big text); "
        "ALTER TABLE full_types REPLICA IDENTITY FULL; ALTER TABLE full_types ALTER big SET STORAGE EXTERNAL;",
        "INSERT INTO full_types VALUES (1, '{\"a\": 1.10}', '(1,2)', '<a/>', repeat(md5('x'), 200)), "
        "(2, NULL, NULL, NULL, NULL);",
        "UPDATE full_types SET p = '(3,4)';",
        "UPDATE full_types SET big = NULL WHERE id = 1; DELETE FROM full_types WHERE id = 2;",
        # columns added with a default to rows already there (no rewrite: the old tuples lack them)
        "CREATE TABLE fastdef (id int PRIMARY KEY, a text); ALTER TABLE fastdef REPLICA IDENTITY FULL;",
        "INSERT INTO fastdef VALUES (1, 'one'), (2, 'two'), (3, 'three');",
        "ALTER TABLE fastdef ADD COLUMN b int DEFAULT 42, ADD COLUMN c text DEFAULT 'dflt' NOT NULL;",
        "UPDATE fastdef SET a = 'uno' WHERE id = 1;",
        "DELETE FROM fastdef WHERE id = 2;",
        "ALTER TABLE fastdef ADD COLUMN d numeric DEFAULT 1.50, DROP COLUMN b;",
        "UPDATE fastdef SET id = 30 WHERE id = 3;",
        "UPDATE fastdef SET a = a;",  # (rows not written since d was added: see catalog_only_steps)
        # FULL with a primary key: the key changes, then the table goes (before the relay may read it)
        "CREATE TABLE full_gone (id int PRIMARY KEY, v text NOT NULL); ALTER TABLE full_gone REPLICA IDENTITY FULL;",
        "INSERT INTO full_gone VALUES (1, 'a'), (2, 'b');",
        "UPDATE full_gone SET v = 'c' WHERE id = 1;",
        "ALTER TABLE full_gone DROP CONSTRAINT full_gone_pkey; ALTER TABLE full_gone ADD PRIMARY KEY (v);",
        "UPDATE full_gone SET id = 3 WHERE v = 'c'; DELETE FROM full_gone WHERE id = 2;",
        "DROP TABLE full_gone;",
    ]


def identity_pk_steps() -> list[Step]:
    return [
        # primary key, then FULL
        "CREATE TABLE with_pkey (id serial PRIMARY KEY, data int, note text);",
        "INSERT INTO with_pkey (data) VALUES (1), (2);",
        "DELETE FROM with_pkey WHERE data = 1;",
        "UPDATE with_pkey SET data = 3 WHERE data = 2;",
        "UPDATE with_pkey SET id = -id;",
        "ALTER TABLE with_pkey REPLICA IDENTITY FULL;",
        "UPDATE with_pkey SET id = -id, note = NULL;",
        "UPDATE with_pkey SET note = 'n';",
        "DELETE FROM with_pkey WHERE data = 3;",
        # composite primary key
        "CREATE TABLE composite_pk (a int, b text, c date, v text, PRIMARY KEY (a, b, c));",
        "INSERT INTO composite_pk VALUES (1, 'x', '2024-01-01', 'v1'), (1, 'y', '2024-01-01', NULL);",
        "UPDATE composite_pk SET b = 'z', v = 'moved' WHERE b = 'x';",
        "DELETE FROM composite_pk WHERE b = 'y';",
    ]


def identity_index_steps() -> list[Step]:
    return [
        # unique not-null index as the replica identity, no primary key
        "CREATE TABLE uniq_nn (id serial UNIQUE NOT NULL, data int);",
        "ALTER TABLE uniq_nn REPLICA IDENTITY USING INDEX uniq_nn_id_key;",
        "INSERT INTO uniq_nn (data) VALUES (1), (2), (NULL);",
        "DELETE FROM uniq_nn WHERE data = 1;",
        "UPDATE uniq_nn SET data = 3 WHERE data = 2;",
        "UPDATE uniq_nn SET id = -id;",
        "DELETE FROM uniq_nn WHERE data = 3;",
        # a primary key and a different replica identity index
        "CREATE TABLE pk_and_ident (id int PRIMARY KEY, code text NOT NULL UNIQUE, v int);",
        "ALTER TABLE pk_and_ident REPLICA IDENTITY USING INDEX pk_and_ident_code_key;",
        "INSERT INTO pk_and_ident VALUES (1, 'one', 1), (2, 'two', 2);",
        "UPDATE pk_and_ident SET v = 10 WHERE id = 1;",
        "UPDATE pk_and_ident SET code = 'uno' WHERE id = 1;",
        "UPDATE pk_and_ident SET id = 20 WHERE id = 2;",
        "DELETE FROM pk_and_ident WHERE id = 1;",
        # a table renamed and given a primary key later (a table rewrite), the identity index kept
        "CREATE TABLE tr_unique (id2 serial UNIQUE NOT NULL, data int);",
        "ALTER TABLE tr_unique REPLICA IDENTITY USING INDEX tr_unique_id2_key;",
        "INSERT INTO tr_unique (data) VALUES (10);",
        "ALTER TABLE tr_unique RENAME TO tr_pkey;",
        "ALTER TABLE tr_pkey ADD COLUMN id serial PRIMARY KEY;",
        "INSERT INTO tr_pkey (data) VALUES (1);",
        "DELETE FROM tr_pkey;",
    ]


def toast_steps(rng: random.Random) -> list[Step]:
    big1, big2 = noise(rng, 12000), noise(rng, 9000)
    return [
        """CREATE SEQUENCE xpto_rand_seq START 79 INCREMENT 1499;
           CREATE TABLE xpto (id serial PRIMARY KEY, toasted_col1 text,
               rand1 float8 DEFAULT nextval('xpto_rand_seq'), toasted_col2 text,
               rand2 float8 DEFAULT nextval('xpto_rand_seq'));""",
        f"INSERT INTO xpto (toasted_col1, toasted_col2) VALUES ('{big1}', '{big2}');",  # uncompressed, out of line
        "INSERT INTO xpto (toasted_col2) SELECT repeat(string_agg(to_char(g, 'FM0000'), ''), 50) "
        "FROM generate_series(1, 500) g;",  # compressed, out of line
        f"UPDATE xpto SET toasted_col1 = '{big2}' WHERE id = 1;",
        "UPDATE xpto SET rand1 = 123.456 WHERE id = 1;",  # both TOASTed columns unchanged
        "INSERT INTO xpto (id, toasted_col2) VALUES (2, 'toasted2-upsert') ON CONFLICT (id) "
        "DO UPDATE SET toasted_col2 = EXCLUDED.toasted_col2 || xpto.toasted_col2;",
        "DELETE FROM xpto WHERE id = 1;",
        *toast_more_steps(rng, big1, big2),
    ]


def toast_key_steps(rng: random.Random) -> list[Step]:
    big1 = noise(rng, 12000)
    # a key repeats a short random text: the index entry must stay below 2.7 kB (compressed)
    key1 = noise(rng, 20) * 100
    return [
        # a TOASTed primary key
        """CREATE TABLE toasted_key (id serial, toasted_key text PRIMARY KEY, toasted_col1 text, toasted_col2 text);
           ALTER TABLE toasted_key ALTER COLUMN toasted_key SET STORAGE EXTERNAL;
           ALTER TABLE toasted_key ALTER COLUMN toasted_col1 SET STORAGE EXTERNAL;""",
        f"INSERT INTO toasted_key (toasted_key, toasted_col1) VALUES ('{key1}', '{big1}');",
        "UPDATE toasted_key SET toasted_col2 = toasted_col1;",  # key unchanged (and TOASTed)
        "UPDATE toasted_key SET toasted_key = toasted_key || '1';",
        "DELETE FROM toasted_key;",
    ]


def toast_more_steps(rng: random.Random, big1: str, big2: str) -> list[Step]:
    big3 = noise(rng, 10) * 10_000

    def copy_rows(cur: Any) -> None:
        import io

        lines = [f"{i}\t{'toasted-' + noise(rng, 3000) if i % 50 == 2 else f'small{i}'}" for i in range(1, 204)]
        cur.copy_expert("COPY toasted_copy FROM STDIN", io.StringIO("\n".join(lines) + "\n"))

    return [
        # COPY (multi-insert) with and without TOASTed values
        "CREATE TABLE toasted_copy (id int PRIMARY KEY, data text); "
        "ALTER TABLE toasted_copy ALTER COLUMN data SET STORAGE EXTERNAL;",
        copy_rows,
        # FULL identity, an old row bigger than a heap tuple, in a transaction that spills
        """CREATE TABLE toasted_several (id serial UNIQUE NOT NULL, toasted_key text PRIMARY KEY,
               toasted_col1 text, toasted_col2 text);
           ALTER TABLE toasted_several REPLICA IDENTITY FULL;
           ALTER TABLE toasted_several ALTER COLUMN toasted_col1 SET STORAGE EXTERNAL;
           ALTER TABLE toasted_several ALTER COLUMN toasted_col2 SET STORAGE EXTERNAL;""",
        f"INSERT INTO toasted_several (toasted_key) VALUES ('{big3}');",
        "UPDATE toasted_several SET toasted_col1 = toasted_key;",
        "UPDATE toasted_several SET toasted_col2 = toasted_col1;",
        """BEGIN;
           INSERT INTO toasted_several (toasted_key) SELECT g::text FROM generate_series(1, 2000) g;
           UPDATE toasted_several SET toasted_col1 = toasted_col2 WHERE id = 1;
           DELETE FROM toasted_several WHERE id = 1;
           COMMIT;""",
        # TOASTed values of other types: bytea, jsonb, an array, unchanged by an update
        "CREATE TABLE toasted_types (id int PRIMARY KEY, b bytea, j jsonb, a int[], n int);"
        "ALTER TABLE toasted_types ALTER b SET STORAGE EXTERNAL, ALTER j SET STORAGE EXTERNAL, "
        "ALTER a SET STORAGE EXTERNAL;",
        "INSERT INTO toasted_types SELECT 1, decode(string_agg(md5(g::text), ''), 'hex') || '\\x00'::bytea, "
        "jsonb_build_object('k', string_agg(md5(g::text), ''), 'n', 1.0000000000000000001), "
        "array_agg(g), 0 FROM generate_series(1, 600) g;",
        "UPDATE toasted_types SET n = 1;",
        "UPDATE toasted_types SET n = 2, a = a || 601;",
        # the table is gone before the relay decodes its last changes
        "CREATE TABLE toasttable (id serial PRIMARY KEY, toasted_col1 text, toasted_col2 text);",
        f"INSERT INTO toasttable (toasted_col1) VALUES ('{big1}');",
        f"UPDATE toasttable SET toasted_col2 = '{big2}' WHERE id = 1;",
        "DROP TABLE toasttable;",
    ]


def partition_steps() -> list[Step]:
    return [
        # a partitioned table: changes arrive on the partitions; an update that moves a row between them
        """CREATE TABLE parted (id int, v text, PRIMARY KEY (id)) PARTITION BY RANGE (id);
           CREATE TABLE parted_1 PARTITION OF parted FOR VALUES FROM (0) TO (100);
           CREATE TABLE parted_2 PARTITION OF parted FOR VALUES FROM (100) TO (200);""",
        "INSERT INTO parted VALUES (1, 'one'), (150, 'one fifty');",
        "UPDATE parted SET v = 'uno' WHERE id = 1;",
        "UPDATE parted SET id = 101 WHERE id = 1;",  # moves to the other partition: a delete and an insert
        "DELETE FROM parted WHERE id = 150;",
        "CREATE TABLE parted_3 PARTITION OF parted FOR VALUES FROM (200) TO (300); "
        "INSERT INTO parted VALUES (250, 'new');",
    ]


def type_change_steps() -> list[Step]:
    """User types changed while a table uses them: enum labels added and renamed, a domain's base
    constraint changed, a composite type's attribute added."""
    return [
        "CREATE TYPE feeling AS ENUM ('meh'); CREATE TYPE pt2 AS (x int, y int); "
        "CREATE TABLE typed (id int PRIMARY KEY, f feeling, fs feeling[], p pt2);",
        "INSERT INTO typed VALUES (1, 'meh', '{meh}', '(1,2)');",
        "ALTER TYPE feeling ADD VALUE 'glad';",
        "INSERT INTO typed VALUES (2, 'glad', '{glad,meh}', '(3,4)');",
        "ALTER TYPE feeling ADD VALUE 'first' BEFORE 'meh';",
        "UPDATE typed SET f = 'first', fs = '{first}' WHERE id = 1;",
        "ALTER TYPE feeling RENAME VALUE 'meh' TO 'so-so';",
        "INSERT INTO typed VALUES (3, 'so-so', '{so-so,glad}', NULL);",
        "ALTER TYPE pt2 ADD ATTRIBUTE z int;",
        "INSERT INTO typed VALUES (4, 'glad', '{}', '(5,6,7)'); UPDATE typed SET p = '(1,1,1)' WHERE id = 1;",
        # RENAME VALUE and ADD ATTRIBUTE change how untouched rows read without writing them: rows are
        # rewritten here for the final comparison (catalog_only_steps leaves them alone)
        "UPDATE typed SET id = id;",
    ]


def dotted_name_steps() -> list[Step]:
    """A table whose name has a dot, next to the table of that name in that schema."""
    return [
        'CREATE SCHEMA s3; CREATE TABLE s3.rx (id int PRIMARY KEY, v text); CREATE TABLE "s3.rx" (id int PRIMARY KEY);',
        "INSERT INTO s3.rx VALUES (1, 'in schema s3'); INSERT INTO \"s3.rx\" VALUES (2);",
    ]


def reserved_name_steps() -> list[Step]:
    """A user column named like the relay's marker of unchanged TOASTed values, in a table that has
    such an update."""
    return [
        "CREATE TABLE reserved (id int PRIMARY KEY, _headrace_unchanged text, big text); "
        "ALTER TABLE reserved ALTER big SET STORAGE EXTERNAL;",
        "INSERT INTO reserved VALUES (1, 'mine', repeat(md5('r'), 200));",
        "UPDATE reserved SET _headrace_unchanged = 'still mine';",
    ]


def catalog_only_steps() -> list[Step]:
    """DDL that changes the values of rows without writing them, so the WAL has no change for them:
    a column added with a default (existing rows read the default), an enum label renamed, a
    composite type's attribute added. A subscriber's copy of an untouched row must still end up
    equal to the table."""
    return [
        "CREATE TYPE mood2 AS ENUM ('low', 'high'); CREATE TYPE pair2 AS (a int, b int); "
        "CREATE TABLE untouched (id int PRIMARY KEY, m mood2, p pair2);",
        "INSERT INTO untouched VALUES (1, 'low', '(1,2)'), (2, 'high', NULL);",
        "ALTER TABLE untouched ADD COLUMN n numeric DEFAULT 1.50, ADD COLUMN t text DEFAULT 'dflt' NOT NULL;",
        "ALTER TYPE mood2 RENAME VALUE 'low' TO 'lowest';",
        "ALTER TYPE pair2 ADD ATTRIBUTE c int;",
        "INSERT INTO untouched VALUES (3, 'high', '(5,6,7)');",
    ]


def generated_steps() -> list[Step]:
    return [
        # a stored generated column and an identity column
        """CREATE TABLE gen (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, a int,
               doubled int GENERATED ALWAYS AS (a * 2) STORED);""",
        "INSERT INTO gen (a) VALUES (1), (NULL);",
        "UPDATE gen SET a = 5 WHERE id = 1;",
        "DELETE FROM gen WHERE id = 2;",
    ]


def truncate_steps() -> list[Step]:
    return [
        "CREATE TABLE tab1 (id serial UNIQUE, data int); ALTER TABLE tab1 REPLICA IDENTITY USING INDEX tab1_id_key;",
        "CREATE TABLE tab2 (a int PRIMARY KEY, b int);",
        "CREATE TABLE tab3 (a int PRIMARY KEY, t1 int REFERENCES tab1 (id));",
        "INSERT INTO tab1 (data) VALUES (1), (2); INSERT INTO tab2 VALUES (1, 1); INSERT INTO tab3 VALUES (1, 1);",
        "TRUNCATE tab2;",
        "TRUNCATE tab1, tab1 RESTART IDENTITY CASCADE;",
        "INSERT INTO tab1 (data) VALUES (3); INSERT INTO tab2 VALUES (2, 2);",
        "TRUNCATE tab1, tab2 CASCADE;",
        # inside a mixed transaction: rows before and after the truncate
        "BEGIN; INSERT INTO tab2 VALUES (3, 3); TRUNCATE tab2; INSERT INTO tab2 VALUES (4, 4); "
        "UPDATE tab2 SET b = 40 WHERE a = 4; COMMIT;",
        "TRUNCATE tab3;",  # an empty table
    ]


def origin_steps() -> list[Step]:
    return [
        "CREATE TABLE origin_tbl (id serial PRIMARY KEY, data text);",
        "SELECT pg_replication_origin_create('headrace_conformance_origin');",
        "INSERT INTO origin_tbl (data) VALUES ('local');",
        # a session replaying changes from elsewhere: its transactions carry an origin
        """SELECT pg_replication_origin_session_setup('headrace_conformance_origin');
           BEGIN;
           SELECT pg_replication_origin_xact_setup('0/aabbccdd', '2013-01-01 00:00');
           INSERT INTO origin_tbl (data) VALUES ('replayed');
           COMMIT;
           SELECT pg_replication_origin_session_reset();""",
        "INSERT INTO origin_tbl (data) VALUES ('local again');",
        "SELECT pg_replication_origin_drop('headrace_conformance_origin');",
    ]


def large_steps() -> list[Step]:
    return [
        "CREATE TABLE big (id int PRIMARY KEY, v text, n numeric);",
        """BEGIN;
           INSERT INTO big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 8000) g;
           UPDATE big SET v = v || '!' WHERE id % 3 = 0;
           DELETE FROM big WHERE id % 5 = 0;
           COMMIT;""",
    ]


SECTIONS: dict[str, Callable[[random.Random, bool], list[Step]]] = {
    "ddl": lambda _rng, _prepared: [*ddl_steps(), *rewrite_steps()],
    "transactions": lambda _rng, _prepared: [*subxact_steps(), *origin_steps(), *large_steps()],
    "prepared": lambda _rng, prepared: prepared_steps(prepared),
    "identity_full": lambda _rng, _prepared: identity_full_steps(),
    "identity_pk": lambda _rng, _prepared: identity_pk_steps(),
    "identity_index": lambda _rng, _prepared: identity_index_steps(),
    "toast": lambda rng, _prepared: toast_steps(rng),
    "toast_key": lambda rng, _prepared: toast_key_steps(rng),
    "truncate": lambda _rng, _prepared: truncate_steps(),
    "partitions": lambda _rng, _prepared: partition_steps(),
    "generated": lambda _rng, _prepared: generated_steps(),
    "type_changes": lambda _rng, _prepared: type_change_steps(),
    "catalog_only": lambda _rng, _prepared: catalog_only_steps(),
    "dotted_names": lambda _rng, _prepared: dotted_name_steps(),
    "reserved_names": lambda _rng, _prepared: reserved_name_steps(),
}


def steps(seed: int, prepared: bool, sections: list[str] | None = None) -> list[Step]:
    """The workload's steps in order: every section, or the ones named."""
    rng = random.Random(seed)
    return [step for name in sections or list(SECTIONS) for step in SECTIONS[name](rng, prepared)]


#: Tables whose primary key never changes, with its columns: event keys and final rows are checked.
KEYS: dict[str, list[str]] = {
    "tr_sub": ["id"],
    "with_pkey": ["id"],
    "composite_pk": ["a", "b", "c"],
    "xpto": ["id"],
    "toasted_copy": ["id"],
    "toasted_types": ["id"],
    "tab2": ["a"],
    "origin_tbl": ["id"],
    "big": ["id"],
    "rw": ["id"],
    "gen": ["id"],
    "typed": ["id"],
    "fastdef": ["id"],
    "untouched": ["id"],
    "tr_many": ["id"],
    "tr_oddlength": ["id"],
    "pk_and_ident": ["code"],  # the event key is the replica identity (docs/sources-postgres.md)
    "toasted_key": ["toasted_key"],
}
