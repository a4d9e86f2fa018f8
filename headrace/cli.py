"""The ``headrace`` command line: one command, a subcommand per daemon or job."""

from __future__ import annotations

import click

from . import __version__
from ._demo import demo
from .agents._cli import agent
from .bootstrap._cli import bootstrap
from .collectors._archive_cli import archive, demux, load
from .collectors._cli import collector
from .relay._cli import relay, subscribe

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="headrace")
def main() -> None:
    """headrace: tail logs into collectors and archives; capture database changes into a relay."""


for command in (agent, collector, relay, subscribe, bootstrap, demo):
    main.add_command(command)

for command in (archive, demux, load):  # the log path's batch jobs
    main.add_command(command)
