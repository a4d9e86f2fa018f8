"""Who may do what: bearer tokens with scopes, shared by every daemon's HTTP surfaces.

A daemon's ``tokens:`` list takes two forms, mixed freely:

* a plain string — the old form: full access to that daemon's surfaces (every scope it has);
* a mapping ``{token | token_file | token_env, scopes, name?, sources?}`` — ``scopes`` is a list of
  ``read`` (status, metrics, and on the relay/bootstrap server every read API), ``write`` (send
  chunks to a collector, ``POST /v1/log`` on an agent) and ``control`` (an agent's run-time
  ``/v1/sources`` changes); ``sources`` (collectors only) lists the chunk ``source`` names the
  token may write (shell-style patterns such as ``web-*``), ``name`` names the token in logs
  (default: ``sha256:<first 12 hex digits of its hash>``; the token itself is never logged).

The core here is sans-io: :class:`AccessPolicy` decides from an ``Authorization`` header value, a
scope and the peer's address, and answers a :class:`Grant` or a :class:`Denied` (401 when the token
is missing or unknown, 403 when it lacks the scope), whose ``detail`` says what to change.
:class:`Access` is the daemon-side holder: it resolves ``token_file``/``token_env``, can be swapped
atomically on SIGHUP (:func:`reload_on_sighup`) and turns a request into a decision.

Rules: with no tokens configured every scope is open except ``control``, which is open only to a
token that has it (so an agent's run-time source changes are off until such a token exists). With
tokens configured every guarded route needs a token with its scope, except ``/metrics`` from a
loopback client when ``metrics_open_on_localhost`` is true. ``/healthz`` is always open, and so is
``GET /``, the status page (it holds no data; the ``/v1/status`` it polls needs ``read``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from prometheus_client import Counter
from pydantic import Field, model_validator

from ._config import Section, parse_listen
from ._logging import get_logger
from .errors import ConfigError

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

__all__ = [
    "Access",
    "AccessPolicy",
    "Denied",
    "Grant",
    "Scope",
    "TokenEntry",
    "TokenSpec",
    "check_token_specs",
    "insecure_listen_problem",
    "is_loopback",
    "reload_on_sighup",
    "resolve",
    "response",
    "token_id",
]

log = get_logger("access")
DENIED = Counter(
    "headrace_access_denied_total", "Requests refused for a missing, unknown or too weak token", ["reason"]
)

Scope = Literal["read", "write", "control"]
ALL_SCOPES: tuple[Scope, ...] = ("read", "write", "control")


class TokenEntry(Section):
    """One token of the new form: where its secret comes from and what it may do."""

    token: str | None = Field(default=None, min_length=1, description="the secret itself")
    token_file: str | None = Field(default=None, description="a file holding the secret (surrounding space removed)")
    token_env: str | None = Field(default=None, description="an environment variable holding the secret")
    name: str | None = Field(default=None, description="how logs name this token; default: a hash prefix")
    scopes: list[Scope] = Field(min_length=1, description="read, write, control")
    sources: list[str] | None = Field(
        default=None, description="collectors: chunk source names (or patterns) this token may write"
    )

    @model_validator(mode="after")
    def _one_secret(self) -> TokenEntry:
        given = [k for k in ("token", "token_file", "token_env") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of token, token_file, token_env")
        return self


#: One item of a ``tokens:`` list: a plain string (full access) or a :class:`TokenEntry`.
TokenSpec = str | TokenEntry


def check_token_specs(
    specs: Sequence[TokenSpec], *, scopes: Iterable[Scope], sources_allowed: bool = False
) -> Sequence[TokenSpec]:
    """Validate a daemon's ``tokens`` list: only the scopes it has, ``sources`` only where it means something.

    For pydantic ``AfterValidator`` use; raises :class:`ValueError` naming the item.
    """
    have = set(scopes)
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            if not spec.strip():
                raise ValueError(f"item {i}: an empty token")
            continue
        extra = [s for s in spec.scopes if s not in have]
        if extra:
            raise ValueError(
                f"item {i}: scope {extra[0]!r} means nothing here (scopes here: {', '.join(sorted(have))})"
            )
        if spec.sources is not None and not sources_allowed:
            raise ValueError(f"item {i}: `sources` binds a token to chunk sources; only collectors have it")
        if spec.sources is not None and "write" not in spec.scopes:
            raise ValueError(f"item {i}: `sources` limits writing; give the token the write scope or drop it")
    return specs


def token_id(secret: str) -> str:
    """How logs name a token that has no ``name``: a short hash, never the token."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()[:12]


@dataclass(frozen=True, slots=True)
class Grant:
    """What one token may do; ``sources`` None means any source."""

    id: str
    scopes: frozenset[str]
    sources: tuple[str, ...] | None = None
    secret: bytes = field(default=b"", repr=False, compare=False)

    def may_write(self, source: str) -> bool:
        """True if this token may write chunks whose ``source`` is ``source``."""
        return self.sources is None or any(fnmatchcase(source, p) for p in self.sources)


@dataclass(frozen=True, slots=True)
class Denied:
    """A refusal: HTTP ``status`` (401 or 403), a machine-readable ``reason`` and what to change."""

    status: int
    reason: str
    detail: str
    token: str | None = None  # the token's id when one was recognised


def is_loopback(host: str | None) -> bool:
    """True for a loopback peer address (127.0.0.0/8, ::1, and IPv4-mapped loopback)."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        addr = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_loopback


def resolve(
    specs: Sequence[TokenSpec], scopes: Iterable[Scope], section: str, environ: dict[str, str] | None = None
) -> list[Grant]:
    """Turn config items into grants, reading ``token_file``/``token_env``; :class:`ConfigError` if one is missing."""
    env = os.environ if environ is None else environ
    full = frozenset(scopes)
    grants: list[Grant] = []
    problems: list[str] = []
    for i, spec in enumerate(specs):
        if isinstance(spec, str):
            secret = spec.strip()
            grants.append(Grant(token_id(secret), full, None, secret.encode()))
            continue
        if spec.token is not None:
            secret = spec.token.strip()
        elif spec.token_file is not None:
            try:
                secret = Path(spec.token_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                problems.append(f"{section}.tokens.{i}.token_file: cannot read {spec.token_file}: {exc.strerror}")
                continue
        else:
            assert spec.token_env is not None
            secret = env.get(spec.token_env, "").strip()
            if not secret:
                problems.append(f"{section}.tokens.{i}.token_env: {spec.token_env} is not set or empty")
                continue
        if not secret:
            problems.append(f"{section}.tokens.{i}: the token is empty (check token_file / token_env)")
            continue
        grants.append(
            Grant(
                spec.name or token_id(secret),
                frozenset(spec.scopes),
                tuple(spec.sources) if spec.sources is not None else None,
                secret.encode(),
            )
        )
    if problems:
        raise ConfigError(problems, section)
    return grants


_WHAT = {
    "read": "status, metrics and read APIs",
    "write": "sending data",
    "control": "run-time source changes",
}


class AccessPolicy:
    """The decision, without I/O: which grant a bearer header carries and whether it has a scope."""

    def __init__(self, section: str, grants: Sequence[Grant], *, metrics_open_on_localhost: bool = False) -> None:
        self.section = section
        self.grants = tuple(grants)
        self.metrics_open_on_localhost = metrics_open_on_localhost

    @property
    def enabled(self) -> bool:
        """True when tokens are configured (every guarded route needs one)."""
        return bool(self.grants)

    def identify(self, authorization: str | None) -> Grant | None:
        """The grant whose token the ``Authorization: Bearer …`` value carries, else None."""
        scheme, _, token = (authorization or "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        given = token.encode()
        found = None
        for g in self.grants:  # compare with all of them: the time taken says nothing about which matched
            if hmac.compare_digest(given, g.secret) and found is None:
                found = g
        return found

    def decide(
        self, authorization: str | None, scope: Scope, *, peer: str | None = None, metrics: bool = False
    ) -> Grant | Denied | None:
        """A :class:`Grant`, None (allowed without a token) or a :class:`Denied` for a request needing ``scope``."""
        sec = self.section
        if scope == "control" and not any("control" in g.scopes for g in self.grants):
            return Denied(
                403,
                "control_api_off",
                f"run-time source changes are off: add a token with scope control to {sec}.tokens "
                "(for example {token_file: /etc/headrace/control.token, scopes: [control]}) and send it as "
                "Authorization: Bearer <token>",
            )
        if not self.grants:
            return None
        if metrics and self.metrics_open_on_localhost and is_loopback(peer):
            return None
        if not authorization:
            return Denied(401, "unauthorized", f"send Authorization: Bearer <token> with a token of {sec}.tokens")
        grant = self.identify(authorization)
        if grant is None:
            return Denied(
                401,
                "unauthorized",
                f"the bearer token is not one of {sec}.tokens (send Authorization: Bearer <token>; check for a typo "
                "or a token that was rotated out)",
            )
        if scope not in grant.scopes:
            return Denied(
                403,
                "forbidden",
                f"token {grant.id} lacks the {scope} scope needed for {_WHAT[scope]}: add {scope!r} to its scopes "
                f"in {sec}.tokens, or use a token that has it",
                grant.id,
            )
        return grant

    def forbidden_source(self, grant: Grant | None, sources: Iterable[str]) -> Denied | None:
        """A 403 ``forbidden_source`` when ``grant`` may not write one of ``sources`` (None: all allowed)."""
        if grant is None or grant.sources is None:
            return None
        bad = sorted({s for s in sources if not grant.may_write(s)})
        if not bad:
            return None
        return Denied(
            403,
            "forbidden_source",
            f"token {grant.id} may write sources {list(grant.sources)}, not {bad[:5]}: nothing of this batch "
            "was written; send it with that host's token, or add the source to the token's sources in "
            f"{self.section}.tokens",
            grant.id,
        )


def insecure_listen_problem(
    section: str, listen: str, has_tokens: bool, allow_insecure: bool, mtls: bool = False
) -> str | None:
    """Why a daemon must not start: a non-loopback ``listen`` with neither tokens nor required client
    certificates (mTLS), unless ``allow_insecure``."""
    if has_tokens or allow_insecure or mtls:
        return None
    host, _port = parse_listen(listen)
    if is_loopback(host):
        return None
    return (
        f"listen {listen} is reachable from other hosts and {section}.tokens is empty, so anyone there could use "
        f"every API: set {section}.tokens (or require client certificates: {section}.tls.require_client_cert), or "
        f"listen on 127.0.0.1, or set {section}.allow_insecure: true to run open anyway"
    )


class Access:
    """A daemon's live policy: built from config, swapped whole on reload, asked per request."""

    def __init__(
        self,
        section: str,
        specs: Sequence[TokenSpec],
        scopes: Iterable[Scope],
        *,
        metrics_open_on_localhost: bool = False,
        on_denied: Callable[[Denied], None] | None = None,
    ) -> None:
        self.section = section
        self.scopes = tuple(scopes)
        self.on_denied = on_denied  # e.g. count it in the daemon's own rejects metric
        self.policy = AccessPolicy(
            section, resolve(specs, self.scopes, section), metrics_open_on_localhost=metrics_open_on_localhost
        )

    def update(self, specs: Sequence[TokenSpec], *, metrics_open_on_localhost: bool) -> None:
        """Swap in new tokens (one reference assignment: requests in flight keep the policy they read)."""
        new = AccessPolicy(
            self.section, resolve(specs, self.scopes, self.section), metrics_open_on_localhost=metrics_open_on_localhost
        )
        self.policy = new
        log.info("tokens_loaded", section=self.section, tokens=[g.id for g in new.grants])

    def decide(self, request: Request, scope: Scope, *, metrics: bool = False) -> Grant | Denied | None:
        """:meth:`AccessPolicy.decide` for a Starlette request; a refusal is logged and counted."""
        peer = request.client.host if request.client else None
        out = self.policy.decide(request.headers.get("authorization"), scope, peer=peer, metrics=metrics)
        if isinstance(out, Denied):
            DENIED.labels(out.reason).inc()
            if self.on_denied is not None:
                self.on_denied(out)
            log.warning(
                "access_denied",
                reason=out.reason,
                scope=scope,
                token=out.token,
                peer=peer,
                method=request.method,
                path=request.url.path,
            )
        return out

    def check(self, request: Request, scope: Scope, *, metrics: bool = False) -> JSONResponse | None:
        """None if allowed, else the JSON error response to send."""
        out = self.decide(request, scope, metrics=metrics)
        return response(out) if isinstance(out, Denied) else None


def response(d: Denied) -> JSONResponse:
    """The JSON error response for a refusal (a 401 carries ``WWW-Authenticate``)."""
    from ._http import error_response

    resp = error_response(d.status, d.reason, d.detail)
    if d.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="headrace"'
    return resp


class TokenSection(Protocol):
    """A daemon's config section as far as access goes."""

    @property
    def tokens(self) -> Sequence[TokenSpec]: ...

    @property
    def metrics_open_on_localhost(self) -> bool: ...


def reload_on_sighup(access: Access, load: Callable[[], TokenSection]) -> None:
    """On SIGHUP, re-read the daemon's config section (``load``) and take its ``tokens`` and
    ``metrics_open_on_localhost`` for the next request."""
    from ._reload import on_reload

    def again() -> None:
        section = load()
        access.update(section.tokens, metrics_open_on_localhost=section.metrics_open_on_localhost)

    on_reload("tokens", again)
