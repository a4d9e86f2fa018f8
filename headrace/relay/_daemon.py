"""Wiring of ``headrace relay``: config → source → registry, buffer, acks → HTTP app."""

from __future__ import annotations

import resource
from pathlib import Path

from .._access import reload_on_sighup
from .._config import load_section
from .._http import bind_listen, run_app
from .._logging import get_logger
from ._buffer import RingBuffer
from ._capture import Acks
from ._config import RelayConfig
from ._schema import SchemaRegistry
from ._serve import RelayState, build_app
from .sources import make_source

__all__ = ["run_relay", "uninstall_relay"]

log = get_logger("relay")


def raise_fd_limit(config: RelayConfig) -> int:
    """Raise the soft open-file limit to the hard one (each open connection is one descriptor); returns it.

    Logs a warning when the limit leaves too little room for ``max_stream_requests`` connections.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("fd_limit_not_raised", soft=soft, hard=hard, error=str(exc))
    needed = config.max_stream_requests + 64
    if soft != resource.RLIM_INFINITY and soft < needed:
        log.warning(
            "fd_limit_low",
            limit=soft,
            needed=needed,
            detail="each stream request holds one descriptor; raise the hard limit (ulimit -Hn, LimitNOFILE=) "
            "or lower relay.max_stream_requests",
        )
    return soft


def run_relay(config: RelayConfig, config_path: str | None = None) -> None:
    """Open the source (installing capture), then serve until SIGTERM."""
    sock = bind_listen(config.listen, "relay.listen")  # a port in use stops it before it installs anything
    fd_limit = raise_fd_limit(config)
    state_dir = Path(config.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    source = make_source(config)
    source.open()
    registry = SchemaRegistry(state_dir / "schemas")
    tables = source.tables()
    for meta in tables:
        registry.register(meta)
    start = source.start_scn()
    state = RelayState(
        config=config,
        source=source,
        registry=registry,
        acks=Acks(state_dir, config.durable_consumers),
        buffer=RingBuffer(config.buffer_bytes, start_scn=start),
    )
    log.info(
        "relay_starting",
        listen=config.listen,
        source=source.kind,
        tables=sorted(state.table_names),
        start_scn=start,
        fd_limit=fd_limit,
    )
    app = build_app(state)

    reload_on_sighup(app.state.access, lambda: load_section(config_path, "relay", RelayConfig))
    run_app(app, config.listen, tls=config.tls, limits=config.limits, listen_key="relay.listen", sock=sock)


def uninstall_relay(config: RelayConfig) -> None:
    """Remove what the source installed (triggers and change log, or slot and publication)."""
    source = make_source(config)
    source.uninstall()
    source.close()
