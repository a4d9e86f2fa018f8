"""Wiring of ``headrace relay``: config → source → registry, buffer, acks → HTTP app."""

from __future__ import annotations

from pathlib import Path

from .._http import run_app
from .._logging import get_logger
from ._buffer import RingBuffer
from ._capture import Acks
from ._config import RelayConfig
from ._schema import SchemaRegistry
from ._serve import RelayState, build_app
from .sources import make_source

__all__ = ["run_relay", "uninstall_relay"]

log = get_logger("relay")


def run_relay(config: RelayConfig) -> None:
    """Open the source (installing capture), then serve until SIGTERM."""
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
        "relay_starting", listen=config.listen, source=source.kind, tables=sorted(state.table_names), start_scn=start
    )
    run_app(build_app(state), config.listen)


def uninstall_relay(config: RelayConfig) -> None:
    """Remove what the source installed (triggers and change log, or slot and publication)."""
    source = make_source(config)
    source.uninstall()
    source.close()
