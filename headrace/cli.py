"""The ``headrace`` command line: one command, a subcommand per daemon or job.

Subcommands are imported when they run, not when ``headrace`` starts: an agent on every host then
loads neither pyarrow nor SQLAlchemy (about half its memory), and every command starts faster.
"""

from __future__ import annotations

import importlib

import click

from . import __version__

__all__ = ["main"]

#: subcommand → "module:attribute" of its click command
_COMMANDS = {
    "agent": "headrace.agents._cli:agent",
    "collector": "headrace.collectors._cli:collector",
    "archive": "headrace.batch._cli:archive",  # the log path's batch jobs
    "demux": "headrace.batch._cli:demux",
    "load": "headrace.batch._cli:load",
    "export": "headrace.batch._cli:export",  # database tables → Parquet
    "tap": "headrace.batch._tap:tap",  # what a processor makes of sample lines
    "relay": "headrace.relay._cli:relay",
    "subscribe": "headrace.relay._cli:subscribe",
    "bootstrap": "headrace.bootstrap._cli:bootstrap",
    "sink": "headrace.sinks._cli:sink",  # windows into a SQL replica or NATS JetStream, exactly once
    "demo": "headrace._demo:demo",
    "verify": "headrace.verify._cli:verify",  # a copy of a table equals its source (Merkle over key buckets)
    "reconcile": "headrace.verify._cli:reconcile",  # the log path's counts per stream, stage by stage
    "check": "headrace._check:check",  # validate a whole config file (and what it points at)
    "up": "headrace._up:up",  # every daemon of a config, supervised
    "status": "headrace._status_cli:status",  # health and key figures of every daemon of a config
}


class _LazyGroup(click.Group):
    """A group whose subcommands are imported on first use (click's documented lazy-loading pattern)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        if cmd_name == "agent":  # on every host: leave out what libraries load only because it is installed
            from ._lean import skip_optional_imports

            skip_optional_imports()
        command = getattr(importlib.import_module(module), attr)
        if not isinstance(command, click.Command):
            raise TypeError(f"{target} is not a click command")
        return command


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="headrace")
def main() -> None:
    """headrace: tail logs into collectors and archives; capture database changes into a relay."""
