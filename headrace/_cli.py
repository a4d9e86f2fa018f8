"""Options and error handling shared by every ``headrace`` subcommand."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from . import _logging
from .errors import FatalError, ListenError, TransientError, UsageError

#: exit status when a daemon cannot listen on its configured address (distinct from 1, 2 and 3-5)
EXIT_LISTEN = 6

F = TypeVar("F", bound=Callable[..., Any])


def common_options(func: F) -> F:
    """Add ``--config``, ``--log-level`` and ``--log-format``, configure logging, map errors to exit codes.

    Exit codes: 0 success, 1 a fatal or transient failure, 2 a usage or configuration error, 6 the
    listen address cannot be bound (docs/configuration.md has the whole table).
    """

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        default=None,
        help="YAML config file; the command reads its own section. Default: built-in defaults.",
    )
    @click.option("--log-level", type=click.Choice(_logging.LEVELS, case_sensitive=False), default="info")
    @click.option(
        "--log-format",
        type=click.Choice(["auto", "console", "json"]),
        default="auto",
        help="auto: console on a terminal, JSON lines otherwise.",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, log_level: str, log_format: Any, **kwargs: Any) -> Any:
        _logging.configure(log_level, log_format)
        try:
            return func(*args, **kwargs)
        except ListenError as exc:
            click.echo(f"headrace: {exc}", err=True)
            sys.exit(EXIT_LISTEN)
        except UsageError as exc:
            click.echo(f"headrace: {exc}", err=True)
            sys.exit(2)
        except (FatalError, TransientError) as exc:
            click.echo(f"headrace: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]
