"""One exception tree for all of headrace, grouped by what the caller should do.

* :class:`UsageError` — the caller (a user, a config file, a request) must change something.
  Retrying the same thing fails the same way. CLI commands exit 2 on these.
* :class:`TransientError` — a dependency is unavailable or busy; retry with backoff and it may work.
  Retry loops key off this class, never off message strings.
* :class:`FatalError` — the process cannot go on without an operator (corrupt state that cannot be
  repaired automatically, an invalidated replication slot, …). CLI commands exit 1 on these.

Part-specific errors subclass one of these three, so a caller that only knows the three groups
still does the right thing.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FatalError",
    "HeadraceError",
    "InvalidInput",
    "ListenError",
    "ScnTooOld",
    "TransientError",
    "Unavailable",
    "UnrepresentableValue",
    "UsageError",
]


class HeadraceError(Exception):
    """Base of every error headrace raises on purpose."""


class UsageError(HeadraceError):
    """The caller must change something (input, config, request); retrying as-is will not help."""


class ConfigError(UsageError):
    """A configuration file or value is invalid. The message names the key path and the reason."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid {source}:\n{lines}")


class InvalidInput(UsageError):
    """A request or record was malformed; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class ListenError(UsageError):
    """A daemon cannot listen where its config says (the port is in use, the address is not this
    host's, a privileged port). Raised before the daemon installs or writes anything; CLI commands
    exit 6 on it, with one line naming the address and the config key."""


class TransientError(HeadraceError):
    """A dependency is down, busy or timed out; retry with backoff."""


class Unavailable(TransientError):
    """A remote endpoint (collector, relay, bootstrap server, database) could not be reached."""


class FatalError(HeadraceError):
    """The process cannot continue without an operator's help; the message says what to do."""


class ScnTooOld(HeadraceError):
    """A subscriber asked for changes older than the relay still holds.

    ``oldest_scn`` is the oldest SCN the relay can serve from. A subscriber with a bootstrap server
    configured switches to it; otherwise it must be re-seeded.
    """

    def __init__(self, since: int, oldest_scn: int | None, relay: str = "") -> None:
        self.since = since
        self.oldest_scn = oldest_scn
        self.relay = relay
        where = f" at {relay}" if relay else ""
        super().__init__(
            f"SCN {since} is older than the relay{where} holds (oldest: {oldest_scn}); "
            "configure a bootstrap server (--bootstrap) or start from a snapshot"
        )


class UnrepresentableValue(FatalError):
    """A captured value the relay cannot encode for its column (a bug to fix, never a silent loss).

    Raised by the row encoder with the table and column; the capture loop adds the SCN. What happens
    next is the relay's ``on_unrepresentable`` policy (see docs/relay.md): stop capture and report it
    in ``/healthz``, or deliver the row with that column null and named in a marker column.
    """

    def __init__(self, table: str, column: str, reason: str, scn: int | None = None) -> None:
        self.table = table
        self.column = column
        self.reason = reason
        self.scn = scn
        at = f" at SCN {scn}" if scn is not None else ""
        super().__init__(f"table {table!r} column {column!r}{at}: value cannot be encoded: {reason}")
