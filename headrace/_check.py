"""``headrace check``: validate a whole config file at once, and optionally what it points at.

Every section in the file (or configured through ``HEADRACE_<SECTION>__…`` variables) is validated
with its command's model, so one run reports every problem of every section: misspelled keys with
the nearest known key, bad values with their key path, values set by the environment with the
variable's name. Demux processors are built, so their options are checked too. With ``--connect``
it then checks that what the config points at is there: collectors, upstreams and relays answer
``/healthz``; source databases have the settings capture needs (nothing is installed); database URLs
connect; storage folders exist or can be created, and are writable; tailed globs match files the
agent can read.

Exit status: 0 all good; 2 a config problem; 1 a ``--connect`` check failed.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import click

from ._cli import common_options
from ._config import KNOWN_SECTIONS, Section, env_overrides, load_section
from .errors import ConfigError, HeadraceError

__all__ = ["Finding", "check", "check_config", "check_connections"]

#: section → "module:model" of the command that reads it
SECTION_MODELS = {
    "agent": "headrace.agents._config:AgentConfig",
    "collector": "headrace.collectors._config:CollectorConfig",
    "archive": "headrace.batch._config:ArchiveConfig",
    "demux": "headrace.batch._config:DemuxConfig",
    "load": "headrace.batch._config:LoadConfig",
    "export": "headrace.batch._config:ExportConfig",
    "relay": "headrace.relay._config:RelayConfig",
    "bootstrap": "headrace.bootstrap._config:BootstrapConfig",
    "sink": "headrace.sinks._config:SinkConfig",
}


@dataclass(frozen=True)
class Finding:
    """One line of the report: ``where`` (a section or key path), ``ok``, and what was found."""

    where: str
    ok: bool
    detail: str


def _model(section: str) -> type[Section] | None:
    target = SECTION_MODELS.get(section)
    if target is None:
        return None
    module, _, name = target.partition(":")
    model: type[Section] = getattr(importlib.import_module(module), name)
    return model


def check_config(path: str, environ: Mapping[str, str] | None = None) -> tuple[list[Finding], dict[str, Any]]:
    """Validate every configured section; (findings, {section: validated model}).

    A file that cannot be read or parsed raises :class:`~headrace.errors.ConfigError`.
    """
    from ._config import _read_file

    environ = os.environ if environ is None else environ
    data = _read_file(path)
    sections = [s for s in KNOWN_SECTIONS if s in data or env_overrides(s, environ)]
    findings: list[Finding] = []
    models: dict[str, Any] = {}
    if not sections:
        findings.append(Finding("file", False, f"no sections: add one of {', '.join(KNOWN_SECTIONS)}"))
    for section in sections:
        for key, var in env_overrides(section, environ).items():
            findings.append(Finding(key, True, f"set by the environment variable {var}"))
        model = _model(section)
        if model is None:
            findings.append(Finding(section, True, "not read by any command yet (headrace subscribe takes flags)"))
            continue
        try:
            cfg = load_section(path, section, model, environ)
        except ConfigError as exc:
            findings += [_problem(section, p) for p in exc.problems]
            continue
        problems = _check_processors(cfg) if section == "demux" else []
        findings += problems
        if not problems:
            models[section] = cfg
            findings.append(Finding(section, True, "valid"))
    return findings, models


def _problem(section: str, text: str) -> Finding:
    """``"demux.threds: unknown key …"`` → a finding at ``demux.threds``."""
    where, sep, detail = text.partition(": ")
    return Finding(where, False, detail) if sep and where.startswith(section) else Finding(section, False, text)


def _check_processors(cfg: Any) -> list[Finding]:
    from .batch._processors import load_processor

    out = []
    specs = [(f"demux.types.{t}", spec) for t, spec in cfg.types.items()]
    if cfg.default is not None:
        specs.append(("demux.default", cfg.default))
    for where, spec in specs:
        try:
            load_processor(spec.processor, dict(spec.model_extra or {}), where)
        except ConfigError as exc:
            out += [_problem(where, p) for p in exc.problems]
    return out


# -- --connect ----------------------------------------------------------------------------------


def _http_ok(url: str, token: str | None = None) -> str | None:
    """None if ``url``'s ``/healthz`` answers 200; else why not."""
    import httpx

    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(url.rstrip("/") + "/healthz", headers=headers, timeout=5)
    except httpx.HTTPError as exc:
        return f"not reachable: {type(exc).__name__}: {exc}"
    if r.status_code != 200:
        return f"/healthz answered {r.status_code}: {r.text[:200]}"
    return None


def _lake(target: Any) -> str | None:
    """None if a ``lake`` sink's storage answers (a local folder: writable); else why not."""
    if "://" not in target.uri or target.uri.startswith("file://"):
        return _writable_dir(target.uri)
    try:
        import deltalake

        log_uri = target.uri.rstrip("/") + "/_headrace_sink"
        deltalake.DeltaTable.is_deltatable(log_uri, storage_options=dict(target.storage_options) or None)
    except Exception as exc:  # any storage error is the finding
        return f"cannot reach {target.uri}: {type(exc).__name__}: {exc}"
    return None


def _writable_dir(path: str) -> str | None:
    """None if ``path`` (a folder or storage URL) can be written; else why not."""
    if "://" in path and not path.startswith("file://"):
        from ._storage import resolve

        try:
            store = resolve(path)
            store.list_dirs(store.base)
        except Exception as exc:  # any storage error is the finding
            return f"cannot list {path}: {type(exc).__name__}: {exc}"
        return None
    folder = os.path.abspath(path.removeprefix("file://"))
    probe = folder
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable by this user" + (" (it would be created)" if probe != folder else "")
    return None


def _database(url: str) -> str | None:
    import sqlalchemy as sa

    from ._db import create_engine

    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        return f"not a database URL: {exc}"
    if parsed.get_backend_name() == "sqlite":  # connecting would create the file: look instead
        db = parsed.database or ""
        if db in ("", ":memory:") or os.path.isfile(db):
            return None if not db or os.access(db, os.R_OK | os.W_OK) or db == ":memory:" else f"{db}: no access"
        problem = _writable_dir(os.path.dirname(os.path.abspath(db)))
        return problem and f"{db} does not exist and cannot be created: {problem}"
    try:
        engine = create_engine(url)
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:  # the driver's own error says what is wrong
        return f"cannot connect: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def _nats(servers: list[str]) -> str | None:
    """None if a NATS server of ``servers`` accepts a TCP connection; else why not."""
    import socket
    import urllib.parse

    last = "no servers"
    for url in servers:
        u = urllib.parse.urlsplit(url if "://" in url else f"nats://{url}")
        try:
            socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), timeout=5).close()
            return None
        except OSError as exc:
            last = f"{url}: not reachable: {exc}"
    return last


def _source(cfg: Any) -> str | None:
    from .relay.sources import make_source

    try:
        source = make_source(cfg)
        source.preflight()
    except HeadraceError as exc:
        return str(exc)
    except Exception as exc:  # a driver error: unreachable database
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def _agent_sources(cfg: Any) -> Iterator[Finding]:
    for i, src in enumerate(cfg.sources):
        where = f"agent.sources.{i}.path"
        files = [f for f in glob.glob(src.path) if os.path.isfile(f)]
        unreadable = [f for f in files if not os.access(f, os.R_OK)]
        if unreadable:
            yield Finding(where, False, f"{len(unreadable)} files this user cannot read, e.g. {unreadable[0]}")
        elif files:
            yield Finding(where, True, f"{len(files)} files match")
        else:
            yield Finding(where, True, "no files match yet (they are picked up when they appear)")


def check_connections(models: Mapping[str, Any]) -> list[Finding]:
    """``--connect``: check what each validated section points at."""
    checks: list[tuple[str, Callable[[], str | None]]] = []
    out: list[Finding] = []
    if (a := models.get("agent")) is not None:
        for i, url in enumerate(a.collectors):
            checks.append((f"agent.collectors.{i} ({url})", functools.partial(_http_ok, url)))
        checks.append(("agent.state_dir", lambda: _writable_dir(a.state_dir)))
        out += _agent_sources(a)
    if (c := models.get("collector")) is not None:
        for i, url in enumerate(c.upstream):
            checks.append((f"collector.upstream.{i} ({url})", functools.partial(_http_ok, url)))
        checks.append(("collector.sink_dir", lambda: _writable_dir(c.sink_dir)))
    if (r := models.get("relay")) is not None:
        checks.append((f"relay.source ({r.source})", lambda: _source(r)))
        checks.append(("relay.state_dir", lambda: _writable_dir(r.state_dir)))
    if (b := models.get("bootstrap")) is not None:
        for i, url in enumerate(b.relays):
            checks.append((f"bootstrap.relays.{i} ({url})", functools.partial(_http_ok, url)))
        checks.append((f"bootstrap.store ({b.store})", lambda: _database(b.store)))
        if b.seed:
            checks.append((f"bootstrap.seed ({b.seed})", lambda: _database(b.seed)))
    if (ar := models.get("archive")) is not None:
        checks.append(("archive.archive_dir", lambda: _writable_dir(ar.archive_dir)))
    if (d := models.get("demux")) is not None:
        checks.append(("demux.output", lambda: _writable_dir(d.output)))
    if (ld := models.get("load")) is not None:
        checks.append((f"load.url ({ld.url})", lambda: _database(ld.url)))
    if (ex := models.get("export")) is not None:
        checks.append((f"export.url ({ex.url})", lambda: _database(ex.url)))
        checks.append(("export.output", lambda: _writable_dir(ex.output)))
    if (sk := models.get("sink")) is not None:
        for i, url in enumerate(sk.relays):
            checks.append((f"sink.relays.{i} ({url})", functools.partial(_http_ok, url, sk.token)))
        for i, url in enumerate(sk.bootstrap):
            checks.append((f"sink.bootstrap.{i} ({url})", functools.partial(_http_ok, url, sk.token)))
        if sk.target.type == "sql":
            checks.append((f"sink.target.url ({sk.target.url})", lambda: _database(sk.target.url)))
        elif sk.target.type == "lake":
            checks.append((f"sink.target.uri ({sk.target.uri})", lambda: _lake(sk.target)))
        else:
            checks.append((f"sink.target.servers ({', '.join(sk.target.servers)})", lambda: _nats(sk.target.servers)))
    for where, fn in checks:
        problem = fn()
        out.append(Finding(where, problem is None, problem or "ok"))
    return out


@click.command()
@common_options
@click.option("--connect", is_flag=True, help="Also check that what the config points at is reachable and usable.")
def check(config_path: str | None, connect: bool) -> None:
    """Validate every section of a config file at once (and, with --connect, what it points at)."""
    if config_path is None:
        raise click.UsageError("give the file to check: headrace check --config FILE")
    findings, models = check_config(config_path)
    bad_config = any(not f.ok for f in findings)
    if connect and not bad_config:
        findings += check_connections(models)
    for f in findings:
        mark = click.style("ok  ", fg="green") if f.ok else click.style("FAIL", fg="red", bold=True)
        click.echo(f"{mark} {f.where}: {f.detail}")
    failed = [f for f in findings if not f.ok]
    click.echo(f"headrace check: {len(failed)} problems in {config_path}", err=True)
    if bad_config:
        raise SystemExit(2)
    if failed:
        raise SystemExit(1)
