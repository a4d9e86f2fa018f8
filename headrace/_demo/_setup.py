"""The demo's one config file: every daemon and batch job, on free ports, with its data under one folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._loglines import KINDS
from ._procs import free_port

__all__ = ["demo_config"]


def demo_config(base: Path) -> dict[str, Any]:
    """The sections of ``base/headrace.yaml``: collector, agent, relay, bootstrap, archive, demux, load.

    ``headrace up --config base/headrace.yaml`` runs its daemons (``--keep``); ``headrace archive``
    (``demux``, ``load``) ``--config`` it runs the batch jobs again on later data.
    """
    ports = {name: free_port() for name in ("collector", "agent", "relay", "bootstrap")}
    listen = {name: f"127.0.0.1:{port}" for name, port in ports.items()}
    db = base / "shop.db"
    return {
        "collector": {"listen": listen["collector"], "sink_dir": str(base / "sink"), "roll_seconds": 5},
        "agent": {
            "name": "demo-host",
            "collectors": [f"http://{listen['collector']}"],
            "state_dir": str(base / "agent"),
            "listen": listen["agent"],
            "rotate_wait_seconds": 0.5,
            "sources": [
                {"path": str(base / "logs" / file), "data_type": data_type} for data_type, (file, _) in KINDS.items()
            ],
        },
        "relay": {
            "listen": listen["relay"],
            "source": f"sqlite:///{db}",
            "state_dir": str(base / "relay"),
            "durable_consumers": ["bootstrap"],
        },
        "bootstrap": {
            "listen": listen["bootstrap"],
            "relays": [f"http://{listen['relay']}"],
            "store": f"sqlite:///{base / 'bootstrap.db'}",
            "seed": f"sqlite:///{db}",
        },
        "archive": {"sink_dir": str(base / "sink"), "archive_dir": str(base / "archive")},
        "demux": {
            "archive_dir": str(base / "archive"),
            "output": str(base / "tables"),
            "types": {data_type: {"processor": processor} for data_type, (_, processor) in KINDS.items()},
            "threads": 2,
        },
        "load": {"input": str(base / "tables"), "url": f"sqlite:///{base / 'logs.db'}"},
    }
