"""The whole at a glance: which daemons a config runs, how each is, and its key figures.

Shared by ``headrace status`` (the terminal) and ``headrace up``'s status page (``/v1/overview``).
:func:`targets` turns a config (or ``up``'s embedded defaults) into :class:`Target` s; :func:`probe`
asks one daemon its ``/healthz`` and ``/v1/status`` (with a ``read`` token from its own section when
tokens are configured); :func:`figures` picks the few numbers a person looks at first (plain code:
a status document in, a dict out). A part is *unhealthy* when ``/healthz`` says not ok or it does
not answer; :func:`problems` lists why, worst first. :func:`batch_runs` reads the last run record of
each batch job of the config (:mod:`headrace.batch._runrecord`): a failed run, or one whose error rate
is above the job's ``max_error_rate`` (demux's; 0.01 for the others), is unhealthy too.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from ._access import Grant, Scope
from ._config import parse_listen
from .errors import ConfigError

__all__ = [
    "DAEMONS",
    "Target",
    "batch_runs",
    "figures",
    "overview",
    "probe",
    "problems",
    "read_grants",
    "targets",
    "url_of",
]

#: the daemon sections, in start order
DAEMONS = ("collector", "agent", "relay", "bootstrap")


@dataclass(frozen=True)
class Target:
    """One daemon to ask: its part name, base URL, a ``read`` token (or None) and TLS verification."""

    name: str
    url: str
    token: str | None = None
    verify: Any = True  # an ssl.SSLContext for https parts, or True


def url_of(listen: str, tls: bool = False) -> str:
    """The URL a client on this host uses for a daemon listening on ``listen`` (``0.0.0.0`` → loopback)."""
    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    scheme = "https" if tls else "http"
    return f"{scheme}://{host}:{port}" if ":" not in host else f"{scheme}://[{host}]:{port}"


def _grants(cfg: Any, section: str) -> list[Grant]:
    from ._access import resolve

    specs = getattr(cfg, "tokens", None) or []
    if not specs:
        return []
    scopes: tuple[Scope, ...] = ("read", "write", "control") if section == "agent" else ("read", "write")
    try:
        return [g for g in resolve(specs, scopes, section) if "read" in g.scopes]
    except ConfigError:  # a token file that cannot be read: ask without one (the answer says 401)
        return []


def _read_token(cfg: Any, section: str) -> str | None:
    """A token of ``cfg.tokens`` that has the ``read`` scope (the first), or None without tokens."""
    grants = _grants(cfg, section)
    return grants[0].secret.decode() if grants else None


def read_grants(models: Mapping[str, Any]) -> list[Grant]:
    """Every ``read`` token of every daemon section of ``models`` (who may see ``up``'s overview)."""
    return [g for name in DAEMONS if name in models for g in _grants(models[name], name)]


def _client_verify(cfg: Any) -> Any:
    """How to verify an https part: the section's own ``client_tls`` (its CA, and its certificate for
    mTLS) when it has one, else the system's CAs."""
    if getattr(cfg, "tls", None) is None:
        return True
    client = getattr(cfg, "client_tls", None)
    if client is None or not client.ca:
        return True
    import ssl

    ctx = ssl.create_default_context(cafile=str(client.ca))
    if client.cert:
        ctx.load_cert_chain(str(client.cert), str(client.key) if client.key else None)
    return ctx


def targets(models: Mapping[str, Any]) -> list[Target]:
    """A :class:`Target` per daemon section of ``models`` (``{section: validated config}``)."""
    out = []
    for name in DAEMONS:
        cfg = models.get(name)
        if cfg is None:
            continue
        tls = getattr(cfg, "tls", None) is not None
        out.append(Target(name, url_of(str(cfg.listen), tls), _read_token(cfg, name), _client_verify(cfg)))
    return out


def _get(client: httpx.Client, t: Target, path: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {t.token}"} if t.token else {}
    return client.get(t.url + path, headers=headers)


def probe(t: Target, timeout: float = 2.0) -> dict[str, Any]:
    """``{name, url, reachable, ok, health, status, error, figures}`` of one daemon, never raising.

    ``ok`` is True only when it answers and ``/healthz`` says ok; ``error`` says why not.
    """
    out: dict[str, Any] = {"name": t.name, "url": t.url, "reachable": False, "ok": False, "health": None,
                           "status": None, "error": None, "figures": {}, "at": time.time()}  # fmt: skip
    try:
        with httpx.Client(timeout=timeout, verify=t.verify) as client:
            h = _get(client, t, "/healthz")
            out["reachable"] = True
            try:
                out["health"] = h.json()
            except ValueError:
                out["health"] = {"ok": False, "detail": h.text[:200]}
            s = _get(client, t, "/v1/status")
            if s.status_code == 200:
                out["status"] = s.json()
            else:
                try:
                    body = s.json()
                    why = f"{body.get('error')}: {body.get('detail')}"
                except ValueError:
                    why = s.text[:200]
                out["status_error"] = f"/v1/status answered {s.status_code} ({why})"
    except httpx.HTTPError as exc:
        out["error"] = f"not reachable at {t.url}: {type(exc).__name__}: {exc}"[:300]
        return out
    health = out["health"] or {}
    out["ok"] = h.status_code == 200 and bool(health.get("ok"))
    if not out["ok"]:
        out["error"] = _health_reason(health, h.status_code)
    elif out.get("status_error"):
        out["error"] = out["status_error"]
    if out["status"] is not None:
        out["figures"] = figures(t.name, out["status"])
    return out


def _health_reason(health: Mapping[str, Any], code: int) -> str:
    parts = []
    for key in ("reason", "detail", "capture_error", "failed"):
        v = health.get(key)
        if v:
            parts.append(str(v))
    errors = health.get("errors")
    if isinstance(errors, Mapping):
        parts += [f"{k}: {v}" for k, v in errors.items() if v]
    return f"/healthz {code}: " + ("; ".join(dict.fromkeys(parts)) or "not ok")


def _num(v: Any) -> int | float:
    return v if isinstance(v, int | float) and not isinstance(v, bool) else 0


def figures(name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """The key figures of a part's ``/v1/status`` (names as the status page and ``headrace status`` show them)."""
    if name == "collector":
        store = status.get("store") or {}
        return {
            "bytes_in": _num(status.get("bytes_in")),
            "chunks_in": _num(status.get("chunks_in")),
            "duplicates": _num(status.get("duplicates")),
            "rejects": sum(_num(v) for v in (status.get("rejects") or {}).values()),
            "sink_files": _num(status.get("sink_files_closed")),
            "open_file": store.get("open_file"),
        }
    if name == "agent":
        streams = status.get("streams") or []
        spool = status.get("spool") or {}
        return {
            "streams": len(streams),
            "lag_bytes": sum(_num(s.get("lag_bytes")) for s in streams),
            "acked_bytes": sum(_num(s.get("acked_offset")) for s in streams),
            "spool_bytes": _num(spool.get("used_bytes")),
            "spool_cap_bytes": _num(spool.get("cap_bytes")),
            "last_ack_from": status.get("last_ack_from"),
        }
    if name == "relay":
        newest, subs = status.get("newest_scn"), status.get("subscribers") or []
        lags = [_num(newest) - _num(s.get("last_scn")) for s in subs if s.get("last_scn") is not None]
        return {
            "oldest_scn": status.get("oldest_scn"),
            "newest_scn": newest,
            "fill": _num(status.get("fill")),
            "events_per_s": _num(status.get("events_per_s")),
            "capture": (status.get("capture") or {}).get("state"),
            "subscribers": len(subs),
            "max_subscriber_lag": max(lags) if lags else 0,
        }
    if name == "bootstrap":
        seed: Mapping[str, Any] = s if isinstance(s := status.get("seeding"), dict) else {}
        return {
            "applied_scn": status.get("applied_scn"),
            "log_scn": status.get("log_scn"),
            "unapplied_events": _num(status.get("unapplied_events")),
            "apply_lag_ms": _num(status.get("apply_lag_ms")),
            "snapshot_ready": status.get("snapshot_ready"),
            "seeding": status.get("building") is not None,
            "seed_rows": seed.get("rows"),
            "seed_estimated_rows": seed.get("estimated_rows"),
            "seed_rows_per_s": seed.get("rows_per_s"),
            "reseeds": _num(reseeds.get("count") if isinstance(reseeds := status.get("reseeds"), dict) else reseeds),
        }
    return {}


def overview(ts: Iterable[Target], timeout: float = 2.0) -> list[dict[str, Any]]:
    """:func:`probe` every target at once; in the targets' order."""
    ts = list(ts)
    if not ts:
        return []
    with ThreadPoolExecutor(max_workers=len(ts)) as pool:
        return list(pool.map(lambda t: probe(t, timeout), ts))


def problems(parts: Iterable[Mapping[str, Any]]) -> list[str]:
    """``"agent: why"`` for every part that is not ok: unreachable ones first."""
    bad = [p for p in parts if not p.get("ok")]
    bad.sort(key=lambda p: bool(p.get("reachable")))
    return [f"{p['name']}: {p.get('error') or 'not ok'}" for p in bad]


#: the error rate above which a batch job's last run is a problem, for jobs without ``max_error_rate``
DEFAULT_MAX_ERROR_RATE = 0.01


def batch_runs(models: Mapping[str, Any]) -> list[dict[str, Any]]:
    """A part per batch job section of ``models`` (archive, demux, load, export): its last run record.

    The same shape as :func:`probe`'s (``kind`` ``"batch"``, ``status`` the record); a job that never
    ran is ok (``figures.never_ran``); a failed or high-error-rate run is not, ``error`` says why.
    """
    from .batch._runrecord import JOBS, load_record, problem, runs_location

    out = []
    for job in JOBS:
        cfg = models.get(job)
        if cfg is None:
            continue
        part: dict[str, Any] = {"name": job, "kind": "batch", "url": "", "reachable": True, "ok": True, "health": None,
                                "status": None, "error": None, "figures": {}, "at": time.time()}  # fmt: skip
        try:
            store, path = runs_location(job, cfg)
            part["url"] = store.uri(path.removeprefix(store.base).lstrip("/"))
            record = load_record(job, cfg)
        except Exception as exc:  # an unreadable record (or store): say so, as a part that does not answer
            part.update(ok=False, reachable=False, error=f"run record not readable: {type(exc).__name__}: {exc}")
            out.append(part)
            continue
        if record is None:
            part["figures"] = {"never_ran": True}
            out.append(part)
            continue
        doc = record.model_dump(mode="json")
        why = problem(record, float(getattr(cfg, "max_error_rate", DEFAULT_MAX_ERROR_RATE)))
        part.update(status=doc, ok=why is None, error=why)
        part["figures"] = {
            "never_ran": False,
            "finished_at": doc["finished_at"],
            "seconds": record.seconds,
            "exit_code": record.exit_code,
            "files": record.files,
            "records": record.records,
            "errors": record.errors,
            "error_rate": record.error_rate,
            "top_reasons": record.top_reasons,
            "idle": record.idle,
        }
        out.append(part)
    return out
