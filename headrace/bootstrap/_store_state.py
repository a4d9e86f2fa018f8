"""The bootstrap store's state rows (``headrace_boot_state``): their version and typed values.

The rows are key/value pairs in the store's database (see :mod:`headrace.bootstrap._store`). Like
the state files (:mod:`headrace._statefile`), they carry a version, checked when the store opens:

* version 0 — before generations: ``log_scn``, ``applied_scn``, ``log_floor`` and ``seed`` without
  a generation prefix (rows in ``headrace_boot_rows``); migrated into generation 1;
* version 1 — generations (``serving``, ``building``, ``last_gen``, ``reseeds``, ``g<g>.*``), no
  version row yet; migrated by writing the version row;
* version 2 — the same with a ``version`` row; the JSON values (``g<g>.seed``, ``reseeds``) are
  checked against :class:`SeedProgress` and :class:`Reseeds` when read and written.

A store a newer headrace wrote (a higher version) is refused with a :class:`~headrace.errors.FatalError`
that says so, before anything is changed; a JSON value that does not match its model names the row
and the field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import FatalError

__all__ = [
    "STATE_VERSION",
    "VERSION_KEY",
    "GenState",
    "Reseeds",
    "SeedProgress",
    "StoreState",
    "check_version",
    "dump_value",
    "load_value",
]

STATE_VERSION = 2
VERSION_KEY = "version"
#: the keys of a version-0 store
OLD_KEYS = ("log_scn", "applied_scn", "log_floor", "seed")


class SeedProgress(BaseModel):
    """``g<g>.seed``: how far seeding generation ``g`` got; seed sources add their own keys
    (``method``, ``rows``, ``after``, …), kept as they are."""

    model_config = ConfigDict(extra="allow")

    start_scn: int
    high_scn: int
    done: bool
    table: str | None = None
    tables: list[str] = []


class Reseeds(BaseModel):
    """``reseeds``: how many re-seeds, the last one's reason, time and generation, recent times."""

    count: int
    last_reason: str | None = None
    last_time_ms: int | None = None
    last_gen: int | None = None
    recent_ms: list[int] = []


class GenState(TypedDict):
    """One generation's positions (None while unset) and seeding progress."""

    gen: int
    log_scn: int | None
    applied_scn: int | None
    log_floor: int | None
    seed: dict[str, Any] | None


class StoreState(TypedDict):
    """The served generation's state (``gen`` None before any is served: then all of it is None),
    the one being built (or None) and the re-seed record."""

    gen: int | None
    log_scn: int | None
    applied_scn: int | None
    log_floor: int | None
    seed: dict[str, Any] | None
    building: GenState | None
    reseeds: dict[str, Any]


def check_version(raw: Mapping[str, str], where: str) -> int:
    """The version of the state rows ``raw`` (of the store ``where``); refuses a newer one."""
    if VERSION_KEY in raw:
        try:
            version = int(raw[VERSION_KEY])
        except ValueError:
            raise FatalError(f"{where}: bad bootstrap store version {raw[VERSION_KEY]!r}") from None
    elif any(k in raw for k in ("serving", "building", "last_gen")):
        version = 1
    elif any(k in raw for k in OLD_KEYS):
        version = 0
    else:
        version = STATE_VERSION  # an empty store
    if version > STATE_VERSION:
        raise FatalError(
            f"{where} was written by a newer headrace (bootstrap store version {version}; this one reads up to "
            f"{STATE_VERSION}): run that version again, or point bootstrap.store at a new database"
        )
    return version


def load_value(model: type[BaseModel], raw: str, row: str) -> dict[str, Any]:
    """The JSON value of state row ``row``, checked against ``model`` (returned as stored)."""
    try:
        value = json.loads(raw)
        model.model_validate(value)
    except ValueError as exc:  # json.JSONDecodeError and pydantic's ValidationError are ValueErrors
        raise FatalError(f"bootstrap store state row {row!r}: {_why(exc)}") from exc
    assert isinstance(value, dict)
    return value


def dump_value(model: type[BaseModel], value: Mapping[str, Any], row: str) -> str:
    """``value`` as the JSON of state row ``row``, after checking it against ``model``."""
    try:
        model.model_validate(value)
    except ValidationError as exc:
        raise ValueError(f"bootstrap store state row {row!r}: {_why(exc)}") from exc
    return json.dumps(value, sort_keys=True)


def _why(exc: ValueError) -> str:
    if isinstance(exc, ValidationError):
        first = exc.errors()[0]
        return f"field {'.'.join(str(p) for p in first['loc']) or '(value)'}: {first['msg']}"
    return f"not JSON ({exc})"
