"""PostgreSQL change source: logical decoding with the built-in ``pgoutput`` plugin over psycopg2.

Theory of operation. :meth:`PostgresSource.open` checks ``wal_level = logical`` and the role's
REPLICATION right (refusing with a message naming the setting), then creates — idempotently — the
publication (``relay.postgres.publication``: ``FOR TABLE`` the tables, of ``relay.tables`` or all,
that have a replica identity, so the application's UPDATE/DELETE on keyless tables are never
refused; kept current by an event trigger and on every slot poll, see :meth:`_ensure_publication`)
and the logical replication slot (``relay.postgres.slot``). :meth:`read` opens a replication connection, runs
``START_REPLICATION SLOT … LOGICAL 0/0 (proto_version '1', publication_names …)`` and feeds every
message through :mod:`._pgoutput` (bytes → messages) and :mod:`._pgstream` (messages → row
changes). With protocol version 1 the server decodes a transaction only after its commit and sends
it whole, in commit order; it spills large transactions to its own disk while decoding. Each
transaction becomes one :class:`ChangeWindow` whose SCN is the commit LSN and whose changes are a
generator reading straight off the socket, so a transaction of any size passes through the source
in constant memory.

Resume-state contract. The only state is the slot's ``confirmed_flush_lsn`` on the server. It
advances only through standby status updates that this source sends with ``flush = durable SCN +
1``, where the durable SCN is what :meth:`acknowledge` was given (the bootstrap store's applied SCN)
— or, with no durable consumer (``acknowledge(None)``), the newest commit read at least
``relay.postgres.retention_seconds`` ago. ``START_REPLICATION`` at ``0/0`` resumes at that position,
so after a relay crash, a PostgreSQL restart or a dropped connection the server sends again every
transaction that was not confirmed; transactions the running relay already delivered (SCN ≤ the
relay's last SCN) are skipped whole. A window is never delivered in part: when the stream breaks
inside a transaction the window's generator raises :class:`~headrace.errors.Unavailable`, and the
relay drops what it has of that window and calls :meth:`read` again from its last whole window.

Slot retention. A slot that is not advanced makes the server keep WAL without limit.
:meth:`read` polls ``pg_replication_slots`` every ``status_interval``: the retained WAL is the
``headrace_relay_pg_slot_retained_wal_bytes`` gauge, and a warning is logged past
``relay.postgres.wal_warn_bytes``. When the server invalidates the slot (``max_slot_wal_keep_size``
exceeded, ``wal_status = lost``) the source raises :class:`~headrace.errors.FatalError` explaining
that changes were lost and how to re-seed (``docs/sources-postgres.md``). The slot and publication
are dropped only by :meth:`uninstall` (``headrace relay uninstall``).

Initial snapshot. :func:`export_snapshot` creates the publication, then the slot with
``EXPORT_SNAPSHOT``, and yields the snapshot name and the slot's consistent LSN while the snapshot
is valid; a bootstrap loader reads
the tables in a ``REPEATABLE READ`` transaction after ``SET TRANSACTION SNAPSHOT '<name>'`` and then
follows the relay from SCN ``consistent_lsn - 1``.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from ..._logging import get_logger
from ...errors import FatalError, TransientError, Unavailable, UsageError
from .._schema import TableMeta
from ._base import ChangeSource, ChangeWindow, RowChange, SourceSnapshot, StopFlag
from ._pgoutput import format_lsn, parse_lsn
from ._pgstream import (
    NOTICE_PREFIX,
    PgChangeAssembler,
    RelationCatalog,
    TxnBegin,
    TxnEnd,
    build_meta,
    split_table_name,
    table_name,
)
from ._pgtypes import SESSION_OPTIONS, CatalogType, resolve_type
from ._retention import ReadMarks

if TYPE_CHECKING:
    from .._config import RelayConfig

__all__ = ["PostgresSource", "SlotSnapshot", "connect", "export_snapshot", "format_lsn", "libpq_dsn", "resolve_type"]


log = get_logger("relay.source.postgres")

RETAINED_WAL = Gauge("headrace_relay_pg_slot_retained_wal_bytes", "WAL the server keeps for the relay's slot")
TRUNCATES = Counter("headrace_relay_pg_truncates_total", "truncate events (one per table of a TRUNCATE)")
RECONNECTS = Counter("headrace_relay_pg_stream_starts_total", "START_REPLICATION calls (first start and resumes)")
STALE_ROWS_DDL = Counter(
    "headrace_relay_pg_rows_changed_without_wal_total",
    "DDL statements that changed how a table's existing rows read without writing them (copies keep old values)",
    ["table"],
)


def libpq_dsn(url: str) -> str:
    """A libpq connection URI from a SQLAlchemy-style URL (``postgresql+psycopg2://…`` → ``postgresql://…``)."""
    _scheme, sep, rest = url.partition("://")
    if not sep:
        raise UsageError(f"relay.source: {url!r} is not a URL like postgresql://user@host:5432/dbname")
    return f"postgresql://{rest}"


def connect(dsn: str, replication: bool = False) -> Any:
    """A psycopg2 connection with the relay's session settings (a replication connection when asked)."""
    import psycopg2
    import psycopg2.extras

    kwargs: dict[str, Any] = {"options": SESSION_OPTIONS, "connect_timeout": 10}
    if replication:
        kwargs["connection_factory"] = psycopg2.extras.LogicalReplicationConnection
    try:
        conn = psycopg2.connect(dsn, **kwargs)
    except psycopg2.OperationalError as exc:
        raise Unavailable(f"cannot connect to PostgreSQL: {str(exc).strip()}") from exc
    if not replication:
        conn.autocommit = True
    return conn


def _is_connection_error(exc: Exception) -> bool:
    """A lost or refused connection or a server shutting down (SQLSTATE 08…, 57P…), not a failed statement."""
    code = getattr(exc, "pgcode", None)
    return code is None or code.startswith(("08", "57P"))


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _sql_text(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _sql_text_array(items: Any) -> str:
    return "ARRAY[" + ", ".join(_sql_text(t) for t in items) + "]::text[]"


#: marks a publication as the relay's own (it keeps the table list; see _ensure_publication)
PUB_MARKER = "headrace relay: managed (tables with a replica identity)"
#: a table (pg_class c) whose UPDATE/DELETE PostgreSQL allows while it is published
_HAS_IDENTITY = (
    "c.relreplident = 'f' "
    "OR (c.relreplident = 'd' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)) "
    "OR (c.relreplident = 'i' AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident))"
)
#: every table FOR ALL TABLES would publish: (schema, name, has a replica identity, in the publication %s,
#: the current role may add it to a publication, its oid, its row type's oid)
_CANDIDATES = (
    f"SELECT n.nspname::text AS nspname, c.relname::text AS relname, ({_HAS_IDENTITY}) AS safe, "
    "EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid "
    "WHERE pr.prrelid = c.oid AND p.pubname = %s) AS published, pg_has_role(c.relowner, 'USAGE') AS owned, "
    "c.oid AS oid, c.reltype AS reltype "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND c.relpersistence = 'p' AND c.oid >= 16384 "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_' "
    "ORDER BY 1, 2"
)
_TRIGGER_TAGS = (
    "'CREATE TABLE', 'CREATE TABLE AS', 'SELECT INTO', 'ALTER TABLE', 'CREATE INDEX', 'DROP INDEX', 'ALTER TYPE'"
)


_Rel = tuple[str, str]  # (schema, table)


def _rel_ident(rel: _Rel) -> str:
    return f"{_quote_ident(rel[0])}.{_quote_ident(rel[1])}"


def _qualified(table: str) -> str:
    schema, name = split_table_name(table)
    return f"{_quote_ident(schema)}.{_quote_ident(name)}" if schema is not None else _quote_ident(name)


@dataclass(frozen=True, slots=True)
class SlotSnapshot:
    """A freshly created slot and the snapshot that lines up with it (valid inside :func:`export_snapshot`)."""

    slot: str
    consistent_lsn: int
    snapshot_name: str

    @property
    def after_scn(self) -> int:
        """The SCN to follow the relay from after loading the snapshot."""
        return self.consistent_lsn - 1


@contextlib.contextmanager
def export_snapshot(config: RelayConfig) -> Iterator[SlotSnapshot]:
    """Create the relay's publication and slot, the slot with ``EXPORT_SNAPSHOT``; the snapshot is usable
    inside the block. ``config`` is the ``RelayConfig`` the relay will run with.

    Use it before the relay first starts (the relay then finds the slot and streams from it)::

        with export_snapshot(config) as snap:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SET TRANSACTION SNAPSHOT %s", (snap.snapshot_name,))
            ...  # read the tables; then follow the relay from snap.after_scn
    """
    source = PostgresSource(config)
    try:
        with source.export_snapshot() as snap:
            yield snap
    finally:
        source.close()


class PostgresSource(ChangeSource):
    """``relay.source: postgresql://user@host:5432/dbname``: see the module docstring."""

    kind = "postgresql"
    idle_seconds = 0.5

    def __init__(self, config: RelayConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = str(config.source)
        self.dsn = libpq_dsn(self.url)
        self.only_tables: list[str] | None = config.tables
        pg = config.postgres
        self.slot: str = pg.slot
        self.publication: str = pg.publication
        self.wal_warn_bytes: int = pg.wal_warn_bytes
        self.retention_seconds: float = pg.retention_seconds
        self.status_interval: float = pg.status_interval
        self.rewrite_on_ddl: bool = pg.row_changing_ddl == "rewrite"
        self._clock = clock
        self._meta_conn: Any = None
        self._assembler = PgChangeAssembler(self._relation_catalog, self._type_catalog)
        self._types: dict[int, CatalogType | None] = {}
        self._marks = ReadMarks(self.retention_seconds)
        self._confirm_lsn = 0  # flush position to report: durable SCN + 1
        self._received_lsn = 0
        self._last_scn = -1
        self._next_poll = 0.0
        self._wal_warned = False
        self._status: dict[str, Any] = {}
        self._tables_cache: tuple[float, list[TableMeta]] | None = None
        self._managed = False  # the publication is the relay's: it keeps the table list
        self._keyless_warned: list[str] = []
        self._missing_warned: list[str] = []
        self._not_owned_warned: list[str] = []

    # -- setup --------------------------------------------------------------------------------
    def _meta(self) -> Any:
        if self._meta_conn is None or self._meta_conn.closed:
            self._meta_conn = connect(self.dsn)
        return self._meta_conn

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg2

        try:
            with self._meta().cursor() as cur:
                cur.execute(sql, args or None)  # no args: no %-formatting (PL/pgSQL bodies use %)
                return list(cur.fetchall()) if cur.description else []
        except psycopg2.OperationalError as exc:
            if not _is_connection_error(exc):
                raise
            self._meta_conn = None
            raise Unavailable(f"PostgreSQL connection lost: {str(exc).strip()}") from exc

    def open(self) -> None:
        import psycopg2

        self._check_server()
        self._ensure_publication()  # before the slot: pgoutput reads the publication as of each change
        slot = self._slot_row()
        if slot is None:
            conn = connect(self.dsn, replication=True)
            try:
                conn.cursor().create_replication_slot(self.slot, output_plugin="pgoutput")
                log.info("slot_created", slot=self.slot)
            except psycopg2.errors.DuplicateObject:
                pass  # another relay created it a moment ago
            except psycopg2.Error as exc:
                raise UsageError(
                    f"cannot create the replication slot {self.slot!r}: {str(exc).strip()} "
                    "(check max_replication_slots and max_wal_senders)"
                ) from exc
            finally:
                conn.close()
            slot = self._slot_row()
            assert slot is not None
        plugin, dbname, wal_status, _ = slot
        (current_db,) = self._query("SELECT current_database()")[0]
        if plugin != "pgoutput" or dbname != current_db:
            raise UsageError(
                f"the replication slot {self.slot!r} exists for plugin {plugin!r} in database {dbname!r}; "
                "set relay.postgres.slot to a name of the relay's own"
            )
        self._check_not_lost(wal_status)

    def preflight(self) -> None:
        """Check ``wal_level`` and the role's REPLICATION attribute (changes nothing)."""
        self._check_server()

    def _check_server(self) -> None:
        (wal_level,) = self._query("SHOW wal_level")[0]
        if wal_level != "logical":
            raise UsageError(
                f"PostgreSQL has wal_level = {wal_level}; the relay needs wal_level = logical. Set it in "
                "postgresql.conf (or run ALTER SYSTEM SET wal_level = logical) and restart PostgreSQL."
            )
        user, can_replicate = self._query(
            "SELECT current_user, rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user"
        )[0]
        if not can_replicate:
            raise UsageError(
                f"the PostgreSQL role {user!r} lacks the REPLICATION attribute that logical decoding needs: "
                f"run ALTER ROLE {_quote_ident(user)} REPLICATION (as a superuser), or connect as a role that has it."
            )

    @contextlib.contextmanager
    def export_snapshot(self) -> Iterator[SlotSnapshot]:
        """Check the server, create the publication, then the slot with an exported snapshot (see
        :func:`export_snapshot`). Fails if the slot exists: its position would not match a new snapshot."""
        self._check_server()
        self._ensure_publication()  # before the slot: pgoutput reads the publication as of each change
        conn = connect(self.dsn, replication=True)
        try:
            cur = conn.cursor()
            try:
                cur.execute(f"CREATE_REPLICATION_SLOT {_quote_ident(self.slot)} LOGICAL pgoutput EXPORT_SNAPSHOT")
            except Exception as exc:
                raise UsageError(
                    f"cannot create replication slot {self.slot!r} with a snapshot: {str(exc).strip()}"
                ) from exc
            name, lsn, snapshot, _plugin = cur.fetchone()
            log.info("slot_created_with_snapshot", slot=name, consistent_lsn=lsn, snapshot=snapshot)
            yield SlotSnapshot(name, parse_lsn(lsn), snapshot)
        finally:
            conn.close()

    def _ensure_publication(self) -> None:
        """Create or adopt the publication (see "Publication" in docs/sources-postgres.md).

        The relay's own publication (created by it, or marked with :data:`PUB_MARKER`, or any
        ``FOR TABLE`` publication when ``relay.tables`` is set) is ``FOR TABLE`` the tables that can be
        published without breaking the application's UPDATE/DELETE — those with a replica identity —
        and is kept so (:meth:`_sync_publication`: here, on every slot poll, and by an event trigger
        on DDL where the role may create one). Any other existing publication is the user's: used as
        it is, with a warning naming the tables whose UPDATE/DELETE PostgreSQL will refuse.
        """
        rows = self._query(
            "SELECT puballtables, coalesce(obj_description(oid, 'pg_publication'), '') FROM pg_publication "
            "WHERE pubname = %s",
            (self.publication,),
        )
        pub = _quote_ident(self.publication)
        if not rows or (rows[0][1] == PUB_MARKER and rows[0][0]):
            # new, or an all-tables publication the operator handed over: (re)create it FOR TABLE the
            # safe tables in one transaction, so no change falls between two publications
            wanted = self._publication_plan()[0]
            target = f" FOR TABLE {', '.join(_rel_ident(t) for t in wanted)}" if wanted else ""
            drop = f"DROP PUBLICATION {pub}; " if rows else ""
            try:
                self._query(
                    f"BEGIN; {drop}CREATE PUBLICATION {pub}{target}; "
                    f"COMMENT ON PUBLICATION {pub} IS {_sql_text(PUB_MARKER)}; COMMIT"
                )
            except Exception as exc:
                with contextlib.suppress(Exception):
                    self._query("ROLLBACK")
                raise UsageError(
                    f"cannot create the publication {self.publication!r} ({str(exc).strip()}): the relay's role needs "
                    "CREATE on the database and must own the tables it publishes (or be a superuser)"
                ) from exc
            log.info("publication_created", publication=self.publication, tables=[table_name(*t) for t in wanted])
            self._managed = True
        elif rows[0][1] == PUB_MARKER or (self.only_tables and not rows[0][0]):
            if rows[0][1] != PUB_MARKER:
                self._query(f"COMMENT ON PUBLICATION {pub} IS {_sql_text(PUB_MARKER)}")
            self._managed = True
        else:
            self._managed = False
            refused = self._query(
                "SELECT p.schemaname, p.tablename FROM pg_publication_tables p "
                "JOIN pg_publication pb ON pb.pubname = p.pubname "
                "JOIN pg_namespace n ON n.nspname = p.schemaname "
                "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
                f"WHERE p.pubname = %s AND (pb.pubupdate OR pb.pubdelete) AND NOT ({_HAS_IDENTITY}) "
                "ORDER BY 1, 2",
                (self.publication,),
            )
            if refused:
                log.warning(
                    "publication_breaks_writes",
                    publication=self.publication,
                    tables=[table_name(s, t) for s, t in refused],
                    hint="PostgreSQL refuses UPDATE and DELETE on these tables while this publication (not created by "
                    "the relay) publishes them; give them a primary key or a REPLICA IDENTITY, or let the relay manage "
                    "the publication (docs/sources-postgres.md, Publication)",
                )
        if self._managed:
            self._sync_publication()
            self._install_publication_trigger()

    def _publication_plan(self) -> tuple[list[_Rel], list[_Rel], list[_Rel], list[str]]:
        """Tables to publish, unpublished ones to add, published ones to drop (as (schema, name)), and the
        names (as :func:`table_name` gives them) of the wanted ones left out for lack of a replica identity."""
        rows = self._query(_CANDIDATES, (self.publication,))
        listed = None if not self.only_tables else {t.removeprefix("public.") for t in self.only_tables}
        wanted: list[_Rel] = []
        add: list[_Rel] = []
        drop: list[_Rel] = []
        keyless: list[str] = []
        not_owned: list[str] = []
        for nsp, rel, safe, published, owned, *_ in rows:
            name = table_name(nsp, rel)
            want = listed is None or name in listed
            if want and safe and not owned and not published:
                not_owned.append(name)
            elif want and safe:
                wanted.append((nsp, rel))
                if not published:
                    add.append((nsp, rel))
            elif published:
                drop.append((nsp, rel))
            if want and not safe:
                keyless.append(name)
        if not_owned != self._not_owned_warned and not_owned:
            log.warning(
                "tables_not_owned",
                tables=not_owned,
                hint="the relay's role may publish only tables it owns: run the relay as their owner or a superuser",
            )
        self._not_owned_warned = not_owned
        return wanted, add, drop, keyless

    def _sync_publication(self) -> None:
        """Add the tables that gained a replica identity, drop the ones that lost it. Each ALTER is its own
        transaction with a short lock timeout: a table the role does not own, or one locked by a long
        transaction, is skipped with a warning (and tried again at the next poll), never fatal."""
        wanted, add, drop, keyless = self._publication_plan()
        pub = _quote_ident(self.publication)
        for verb, rels in (("ADD", add), ("DROP", drop)):
            for rel in rels:
                name = table_name(*rel)
                try:
                    self._query(
                        f"BEGIN; SET LOCAL lock_timeout = '2s'; "
                        f"ALTER PUBLICATION {pub} {verb} TABLE {_rel_ident(rel)}; COMMIT"
                    )
                    log.info("publication_updated", publication=self.publication, action=verb.lower(), table=name)
                except Unavailable:
                    raise
                except Exception as exc:
                    with contextlib.suppress(Exception):
                        self._query("ROLLBACK")
                    log.warning("publication_update_failed", publication=self.publication, table=name, error=str(exc))
        if self.only_tables:
            have = {table_name(*t) for t in wanted} | set(keyless) | set(self._not_owned_warned)
            missing = sorted({t.removeprefix("public.") for t in self.only_tables} - have)
            if missing and missing != self._missing_warned:
                log.warning("tables_not_found", tables=missing, hint="they are published once they exist")
            self._missing_warned = missing
        if keyless != self._keyless_warned and keyless:
            log.warning(
                "tables_not_published",
                tables=keyless,
                reason="no primary key and no REPLICA IDENTITY: PostgreSQL would refuse the application's "
                "UPDATE and DELETE on them if they were published",
                hint="ALTER TABLE … ADD PRIMARY KEY, or ALTER TABLE … REPLICA IDENTITY FULL (or USING INDEX); the "
                "relay then publishes the table by itself",
            )
        self._keyless_warned = keyless
        self._status["unpublished_tables"] = keyless

    def _install_publication_trigger(self) -> None:
        """An event trigger that runs the same reconciliation inside the DDL's own transaction, so a new
        table's first changes are published. Needs a superuser; without it, the slot poll catches up
        within ``status_interval`` (changes made to a new table before that are not captured)."""
        fn = _quote_ident(f"headrace_pub_{self.publication}"[:63])
        listed = (
            "NULL" if not self.only_tables else _sql_text_array(t.removeprefix("public.") for t in self.only_tables)
        )
        pubname = _sql_text(self.publication)
        rewrite = "true" if self.rewrite_on_ddl else "false"
        body = f"""
CREATE OR REPLACE FUNCTION public.{fn}() RETURNS event_trigger LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $headrace$
DECLARE
  r record;
  listed text[] := {listed};
  name text;
  fresh boolean;
  has_rows boolean;
  rewritten boolean;
  prev_role text;
  touched oid[] := ARRAY(SELECT objid FROM pg_event_trigger_ddl_commands() WHERE classid = 'pg_class'::regclass);
  -- types this DDL changed (an enum, a composite — also through its pg_class row), their arrays and domains
  types_touched oid[] := ARRAY(
    SELECT t.oid FROM pg_event_trigger_ddl_commands() d
    JOIN pg_type t ON d.objid IN (t.oid, t.typelem, t.typbasetype, t.typrelid)
    WHERE d.classid IN ('pg_type'::regclass, 'pg_class'::regclass) AND d.command_tag = 'ALTER TYPE');
BEGIN
  FOR r IN {_CANDIDATES.replace("%s", pubname)} LOOP
    name := CASE WHEN r.nspname = 'public' THEN r.relname ELSE r.nspname || '.' || r.relname END;
    IF r.safe AND (listed IS NULL OR name = ANY(listed)) THEN
      IF NOT r.published THEN
        -- created in this transaction (its row type too) and given rows before it had a replica
        -- identity: those rows are not in the stream, so the table sits this transaction out whole
        -- (the relay's next poll publishes it) rather than deliver changes of rows never inserted
        fresh := (SELECT t.xmin FROM pg_type t WHERE t.oid = r.reltype) = pg_current_xact_id()::xid;
        has_rows := false;
        IF fresh THEN
          EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', r.nspname, r.relname) INTO has_rows;
        END IF;
        IF has_rows THEN
          PERFORM pg_logical_emit_message(true, {_sql_text(NOTICE_PREFIX)},
            json_build_object('deferred', name)::text);
        ELSE
          EXECUTE format('ALTER PUBLICATION %I ADD TABLE %I.%I', {pubname}, r.nspname, r.relname);
        END IF;
      END IF;
    ELSIF r.published THEN
      EXECUTE format('ALTER PUBLICATION %I DROP TABLE %I.%I', {pubname}, r.nspname, r.relname);
    ELSIF (listed IS NULL OR name = ANY(listed)) AND r.oid = ANY(touched) THEN
      -- a wanted table this DDL left without a replica identity: say so in the stream, where the
      -- relay reports it at once, naming it
      PERFORM pg_logical_emit_message(true, {_sql_text(NOTICE_PREFIX)},
        json_build_object('unpublished', name)::text);
    END IF;
  END LOOP;
  -- DDL that changes how existing rows read without writing them (ADD COLUMN with a default: the value
  -- lives in the catalog; ALTER TYPE … RENAME VALUE / ADD ATTRIBUTE): the WAL has no change for those
  -- rows, so copies keep their old values. Say so in the stream; the relay reports it.
  FOR r IN
    SELECT n.nspname::text AS nspname, c.relname::text AS relname,
           string_agg(a.attname::text, ', ' ORDER BY a.attnum) AS cols,
           string_agg(format('%I = %I', a.attname, a.attname), ', ' ORDER BY a.attnum) AS setlist
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
      AND EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                  WHERE pr.prrelid = c.oid AND p.pubname = {pubname})
      AND ((c.oid = ANY(touched) AND a.atthasmissing AND a.xmin = pg_current_xact_id()::xid)
           OR a.atttypid = ANY(types_touched))
    GROUP BY 1, 2
  LOOP
    name := CASE WHEN r.nspname = 'public' THEN r.relname ELSE r.nspname || '.' || r.relname END;
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I.%I)', r.nspname, r.relname) INTO has_rows;
    rewritten := false;
    IF has_rows AND {rewrite} THEN
      -- write the rows again so they travel as updates; the user's triggers do not fire
      BEGIN
        prev_role := current_setting('session_replication_role');
        PERFORM set_config('session_replication_role', 'replica', true);
        EXECUTE format('UPDATE %I.%I SET %s', r.nspname, r.relname, r.setlist);
        PERFORM set_config('session_replication_role', prev_role, true);
        rewritten := true;
        PERFORM pg_logical_emit_message(true, {_sql_text(NOTICE_PREFIX)},
          json_build_object('rewritten', name, 'columns', r.cols, 'command', tg_tag)::text);
      EXCEPTION WHEN OTHERS THEN
        RAISE WARNING 'headrace: rows of % not rewritten after %: %', name, tg_tag, SQLERRM;
      END;
    END IF;
    IF has_rows AND NOT rewritten THEN
      PERFORM pg_logical_emit_message(true, {_sql_text(NOTICE_PREFIX)},
        json_build_object('stale_rows', name, 'columns', r.cols, 'command', tg_tag)::text);
    END IF;
  END LOOP;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'headrace: publication % not updated: %', {pubname}, SQLERRM;
END
$headrace$"""
        try:
            self._query(
                f"BEGIN; {body}; DROP EVENT TRIGGER IF EXISTS {fn}; CREATE EVENT TRIGGER {fn} ON ddl_command_end "
                f"WHEN TAG IN ({_TRIGGER_TAGS}) EXECUTE FUNCTION public.{fn}(); COMMIT"
            )
            self._status["publication_trigger"] = True
        except Unavailable:
            raise
        except Exception as exc:
            with contextlib.suppress(Exception):
                self._query("ROLLBACK")
            self._status["publication_trigger"] = False
            log.warning(
                "publication_trigger_unavailable",
                publication=self.publication,
                error=str(exc).strip(),
                hint=f"new tables join the publication within status_interval ({self.status_interval} s); changes to "
                "a new table before that are not captured. Run the relay once as a superuser to install the trigger.",
            )

    def _slot_row(self) -> tuple[Any, ...] | None:
        rows = self._query(
            "SELECT plugin, database, wal_status, confirmed_flush_lsn::text FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (self.slot,),
        )
        return rows[0] if rows else None

    def _check_not_lost(self, wal_status: str | None) -> None:
        if wal_status == "lost":
            raise FatalError(
                f"PostgreSQL invalidated the replication slot {self.slot!r} (wal_status = lost): it kept more WAL "
                "than max_slot_wal_keep_size allows, so changes since the relay's last position are gone. "
                "Re-seed: run `headrace relay uninstall` (drops the slot), start the relay again (creates a new "
                "slot), and re-bootstrap subscribers from a snapshot (see docs/sources-postgres.md)."
            )

    def uninstall(self) -> None:
        """Drop the slot, the publication and its event trigger (waits up to 10 s for a just-stopped relay's
        connection to go)."""
        import psycopg2

        deadline = self._clock() + 10.0
        while True:
            rows = self._query("SELECT active FROM pg_replication_slots WHERE slot_name = %s", (self.slot,))
            if not rows:
                break
            if not rows[0][0]:
                with contextlib.suppress(Exception):
                    self._query("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                    log.info("slot_dropped", slot=self.slot)
                continue
            if self._clock() > deadline:
                raise UsageError(f"the replication slot {self.slot!r} is in use: stop the relay first")
            time.sleep(0.2)
        fn = _quote_ident(f"headrace_pub_{self.publication}"[:63])
        with contextlib.suppress(psycopg2.Error):  # not installed (or not ours to drop)
            self._query(f"DROP EVENT TRIGGER IF EXISTS {fn}; DROP FUNCTION IF EXISTS public.{fn}()")
        self._query(f"DROP PUBLICATION IF EXISTS {_quote_ident(self.publication)}")

    def close(self) -> None:
        if self._meta_conn is not None:
            with contextlib.suppress(Exception):
                self._meta_conn.close()
            self._meta_conn = None

    # -- catalog ------------------------------------------------------------------------------
    def _relation_catalog(self, relid: int) -> RelationCatalog | None:
        """Primary key and replica identity index columns (index order) and NOT NULL columns of a
        relation as the catalog has it now; None when the relation no longer exists."""
        rows = self._query(
            "SELECT a.attname, a.attnotnull, "
            "(SELECT array_position(i.indkey::int2[], a.attnum) FROM pg_index i "
            " WHERE i.indrelid = a.attrelid AND i.indisprimary), "
            "(SELECT array_position(i.indkey::int2[], a.attnum) FROM pg_index i "
            " WHERE i.indrelid = a.attrelid AND i.indisreplident) "
            "FROM pg_attribute a WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped",
            (relid,),
        )
        if not rows:
            return None

        def ordered(col: int) -> tuple[str, ...]:
            return tuple(r[0] for r in sorted((r for r in rows if r[col] is not None), key=lambda r: r[col]))

        return RelationCatalog(ordered(2), frozenset(r[0] for r in rows if r[1]), ordered(3))

    def _type_catalog(self, oid: int) -> CatalogType | None:
        if oid not in self._types:
            rows = self._query(
                "SELECT t.oid, t.typname, t.typtype, t.typelem, t.typbasetype, t.typcategory, "
                "ARRAY(SELECT enumlabel::text FROM pg_enum WHERE enumtypid = t.oid ORDER BY enumsortorder) "
                "FROM pg_type t WHERE t.oid = %s",
                (oid,),
            )
            r = rows[0] if rows else None
            self._types[oid] = (
                CatalogType(int(r[0]), r[1], r[2], int(r[3]), int(r[4]), r[5], tuple(r[6])) if r is not None else None
            )
        return self._types[oid]

    def tables(self) -> list[TableMeta]:
        """The published tables as the catalog describes them now (cached for ``status_interval``: the
        relay asks on every idle tick, and the stream's Relation messages are what events use)."""
        now = self._clock()
        if self._tables_cache is not None and now - self._tables_cache[0] < self.status_interval:
            return self._tables_cache[1]
        out = []
        rows = self._query(
            "SELECT c.oid, n.nspname, c.relname, c.relreplident FROM pg_publication_tables p "
            "JOIN pg_namespace n ON n.nspname = p.schemaname "
            "JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = p.tablename "
            "WHERE p.pubname = %s ORDER BY n.nspname, c.relname",
            (self.publication,),
        )
        for relid, nsp, rel, ident in rows:
            cols = self._query(
                "SELECT attname, atttypid, atttypmod FROM pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                (relid,),
            )
            resolved = [(name, resolve_type(int(typ), int(mod), self._type_catalog)) for name, typ, mod in cols]
            cat = self._relation_catalog(relid)
            if cat is None:
                continue  # dropped meanwhile
            # the columns a Relation message would flag as replica identity, in column order
            ident_cols = set(cat.primary_key if ident == "d" else cat.identity_index if ident == "i" else ())
            identity = tuple(name for name, _t in resolved if name in ident_cols)
            out.append(build_meta(table_name(nsp, rel), resolved, identity, ident, cat))
        self._tables_cache = (now, out)
        return out

    def start_scn(self) -> int:
        slot = self._slot_row()
        if slot is None:
            raise FatalError(f"the replication slot {self.slot!r} does not exist (was it dropped?)")
        return parse_lsn(slot[3]) - 1

    # -- feedback -----------------------------------------------------------------------------
    def acknowledge(self, durable_scn: int | None) -> None:
        if durable_scn is None:
            durable_scn = self._marks.durable(self._clock())
        if durable_scn is not None:
            self._confirm_lsn = max(self._confirm_lsn, durable_scn + 1)

    def _feedback(self, cur: Any, force: bool = False) -> None:
        cur.send_feedback(write_lsn=self._received_lsn, flush_lsn=self._confirm_lsn, force=force)

    def _poll_slot(self) -> None:
        rows = self._query(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint, wal_status, safe_wal_size, "
            "confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
            (self.slot,),
        )
        if not rows:
            raise FatalError(
                f"the replication slot {self.slot!r} was dropped while the relay ran; changes since are lost. "
                "Start the relay again to create a new slot and re-seed subscribers (docs/sources-postgres.md)."
            )
        retained, wal_status, safe, confirmed = rows[0]
        self._check_not_lost(wal_status)
        retained = int(retained or 0)
        RETAINED_WAL.set(retained)
        if self._managed:
            self._sync_publication()
        self._status = {
            **self._status,
            "slot": self.slot,
            "publication": self.publication,
            "retained_wal_bytes": retained,
            "wal_status": wal_status,
            "safe_wal_size": safe,
            "confirmed_flush_lsn": confirmed,
            "last_scn": self._last_scn,
        }
        if retained > self.wal_warn_bytes and not self._wal_warned:
            log.warning(
                "slot_retains_much_wal",
                slot=self.slot,
                retained_wal_bytes=retained,
                warn_bytes=self.wal_warn_bytes,
                hint="the slot advances only as far as downstream is durable; check the bootstrap server, "
                "or set max_slot_wal_keep_size to cap it (see docs/sources-postgres.md)",
            )
        self._wal_warned = retained > self.wal_warn_bytes

    def describe(self) -> dict[str, Any]:
        return dict(self._status)

    # -- streaming ----------------------------------------------------------------------------
    def _start(self) -> tuple[Any, Any]:
        import psycopg2

        conn = connect(self.dsn, replication=True)
        cur = conn.cursor()
        options = {"proto_version": "1", "publication_names": self.publication}
        if conn.server_version >= 140000:  # the event trigger's notices (logical decoding messages)
            options["messages"] = "true"
        try:
            cur.start_replication(
                slot_name=self.slot,
                decode=False,
                start_lsn=0,
                options=options,
                status_interval=self.status_interval,
            )
        except psycopg2.errors.ObjectNotInPrerequisiteState as exc:
            conn.close()
            self._check_not_lost("lost" if "invalidated" in str(exc) or "no longer" in str(exc) else None)
            raise FatalError(f"cannot stream from slot {self.slot!r}: {str(exc).strip()}") from exc
        except psycopg2.errors.UndefinedObject as exc:
            conn.close()
            raise FatalError(
                f"the replication slot {self.slot!r} does not exist: it was dropped, and changes since are lost. "
                "Restart the relay to create a new one and re-seed subscribers (docs/sources-postgres.md)."
            ) from exc
        except psycopg2.errors.ObjectInUse as exc:
            conn.close()
            raise TransientError(f"the slot {self.slot!r} is in use by another connection: {str(exc).strip()}") from exc
        except psycopg2.OperationalError as exc:
            conn.close()
            raise Unavailable(f"PostgreSQL stream could not start: {str(exc).strip()}") from exc
        RECONNECTS.inc()
        return conn, cur

    def _maintain(self, cur: Any) -> None:
        now = self._clock()
        if now >= self._next_poll:
            self._next_poll = now + self.status_interval
            self._poll_slot()
            self._feedback(cur, force=True)

    def _next_message(self, conn: Any, cur: Any, timeout: float) -> Any:
        """The next decoded item, or None after ``timeout`` seconds without one (messages that produce
        nothing, like a replayed transaction being skipped, do not hold the caller up longer)."""
        import psycopg2

        deadline = self._clock() + timeout
        try:
            while True:
                msg = cur.read_message()
                if msg is not None:
                    self._received_lsn = max(self._received_lsn, msg.data_start)
                    item = self._assembler.feed_payload(msg.payload)
                    if item is None:
                        if self._clock() > deadline:
                            return None
                        continue
                    return item
                left = deadline - self._clock()
                if left <= 0:
                    return None
                select.select([conn], [], [], min(left, 0.5))
        except psycopg2.OperationalError as exc:
            raise Unavailable(f"PostgreSQL replication stream broke: {str(exc).strip()}") from exc
        except psycopg2.errors.UndefinedObject as exc:
            raise FatalError(
                f"logical decoding failed: {str(exc).strip()}. The publication {self.publication!r} must exist "
                "as long as the slot does, and must have existed when the slot was created: run "
                "`headrace relay uninstall`, start the relay again and re-seed subscribers (docs/sources-postgres.md)."
            ) from exc
        except psycopg2.DatabaseError as exc:
            raise Unavailable(f"PostgreSQL replication stream failed: {str(exc).strip()}") from exc

    def _changes(self, conn: Any, cur: Any, stop: threading.Event, begin: TxnBegin) -> Iterator[RowChange]:
        import psycopg2

        read, feed = cur.read_message, self._assembler.feed_payload
        while True:
            if stop.is_set():
                raise TransientError(f"stopped inside the window of SCN {begin.scn}")
            try:  # the hot loop: one message per row change, straight off the socket
                while (msg := read()) is not None:
                    item = feed(msg.payload)
                    if type(item) is RowChange:
                        yield item
                    elif type(item) is list:  # a TRUNCATE: one change per table
                        TRUNCATES.inc(len(item))
                        yield from item
                    elif isinstance(item, TxnEnd):
                        self._received_lsn = max(self._received_lsn, msg.data_start)
                        self._last_scn = item.scn
                        self._marks.read(self._clock(), item.scn)
                        self._report_notices(item.scn)
                        return
            except psycopg2.OperationalError as exc:
                raise Unavailable(f"PostgreSQL replication stream broke: {str(exc).strip()}") from exc
            except psycopg2.DatabaseError as exc:
                raise Unavailable(f"PostgreSQL replication stream failed: {str(exc).strip()}") from exc
            item = self._next_message(conn, cur, self.idle_seconds)  # waits for the next message
            if item is None:
                self._maintain(cur)
            elif isinstance(item, RowChange):
                yield item
            elif isinstance(item, list):
                TRUNCATES.inc(len(item))
                yield from item
            elif isinstance(item, TxnEnd):
                self._last_scn = item.scn
                self._marks.read(self._clock(), item.scn)
                self._report_notices(item.scn)
                return

    def _report_notices(self, scn: int) -> None:
        """Report what the event trigger said in the transaction just read (see _install_publication_trigger)."""
        notices, self._assembler.notices = self._assembler.notices, []
        for n in notices:
            if "unpublished" in n:
                table = str(n["unpublished"])
                log.warning(
                    "table_not_published",
                    table=table,
                    scn=scn,
                    reason="no primary key and no REPLICA IDENTITY: PostgreSQL would refuse the application's "
                    "UPDATE and DELETE on it if it were published",
                    hint="ALTER TABLE … ADD PRIMARY KEY, or ALTER TABLE … REPLICA IDENTITY FULL (or USING INDEX); the "
                    "relay then publishes the table by itself",
                )
                unpublished = self._status.setdefault("unpublished_tables", [])
                if table not in unpublished:
                    unpublished.append(table)
            elif "stale_rows" in n:
                table = str(n["stale_rows"])
                STALE_ROWS_DDL.labels(table).inc()
                log.warning(
                    "rows_changed_without_wal",
                    table=table,
                    columns=str(n.get("columns", "")),
                    command=str(n.get("command", "")),
                    scn=scn,
                    reason="this DDL changes how the table's existing rows read (a column's default, a renamed enum "
                    "label, a composite type's new attribute) without writing them: the WAL has no change for "
                    "those rows, so copies keep their old values",
                    hint="re-seed consumers of this table (a bootstrap re-seed, or headrace export), or set "
                    "relay.postgres.row_changing_ddl: rewrite to write such rows again (see docs/sources-postgres.md)",
                )
                stale = self._status.setdefault("stale_after_ddl", [])
                entry = {"table": table, "columns": n.get("columns"), "command": n.get("command"), "scn": scn}
                stale.append(entry)
                del stale[:-20]  # the last 20
            elif "rewritten" in n:
                log.info(
                    "rows_rewritten_after_ddl",
                    table=str(n["rewritten"]),
                    columns=str(n.get("columns", "")),
                    command=str(n.get("command", "")),
                    scn=scn,
                )
            elif "deferred" in n:
                log.warning(
                    "table_left_out_of_its_first_transaction",
                    table=str(n["deferred"]),
                    scn=scn,
                    reason="it was created and given rows before it had a replica identity, in one transaction: "
                    "those rows are not in the stream, so none of that transaction's changes of it are delivered",
                    hint="the relay publishes it from the next transaction on; re-seed consumers of it (a bootstrap "
                    "re-seed, or headrace export) if they need the rows written before",
                )

    def read(self, after_scn: int | None, stop: threading.Event) -> Iterator[ChangeWindow | None]:
        self._assembler.reset()
        self._assembler.skip_through = -1 if after_scn is None else after_scn
        if after_scn is not None:
            self._last_scn = max(self._last_scn, after_scn)
        conn, cur = self._start()
        log.info("stream_started", slot=self.slot, after_scn=after_scn, after_lsn=format_lsn(max(after_scn or 0, 0)))
        self._next_poll = 0.0
        try:
            while not stop.is_set():
                self._feedback(cur)
                self._maintain(cur)
                item = self._next_message(conn, cur, self.idle_seconds)
                if item is None:
                    yield None
                elif isinstance(item, TxnBegin):
                    yield ChangeWindow(item.scn, item.ts_ms, self._changes(conn, cur, stop, item))
                    if self._assembler.in_transaction:
                        raise TransientError(f"the window of SCN {item.scn} was not read to its end")
        finally:
            with contextlib.suppress(Exception):
                self._feedback(cur, force=True)
            conn.close()

    # -- snapshot ------------------------------------------------------------------------------
    def snapshot(
        self,
        tables: Sequence[str] | None = None,
        *,
        stop: StopFlag | None = None,
        resume: bool = False,
    ) -> SourceSnapshot:
        """A consistent snapshot of the published ``tables`` aligned with this source's stream (see
        :mod:`._pgsnapshot`); waits until this source's slot and publication exist. Not resumable:
        ``resume`` takes a new snapshot."""
        from ._pgsnapshot import take_snapshot

        del resume
        return take_snapshot(self.dsn, self.slot, self.publication, tables, self._query, self._type_catalog, stop)
