"""Record processors: what turns a data type's lines into typed columns, and how one is found.

A processor is any object with ``parse(batch: LineBatch) -> Parsed``. It gets a whole batch of lines
as an Arrow array and answers with columns of the same length plus a ``reason`` array: null where
the line parsed, a short reason where it did not (those lines go to ``_errors``, never dropped).
Work on whole arrays (``pyarrow.compute``, Arrow's CSV/JSON readers), not a Python loop per line.

Processors are made by a factory called with the data type's options (the keys next to
``processor:`` in ``demux.types``). Names are looked up as: a built-in (``raw``, ``regex``, ``json``,
``combined``, ``syslog``); an entry point in the group ``headrace.processors``; a dotted path
``package.module:factory`` (or ``package.module.factory``).
"""

from __future__ import annotations

import datetime as dt
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any, Literal, Protocol

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import ConfigError
from ._lines import LineBatch

__all__ = [
    "ENTRY_POINT_GROUP",
    "FieldType",
    "Options",
    "Parsed",
    "Processor",
    "ProcessorFactory",
    "convert",
    "load_processor",
]

ENTRY_POINT_GROUP = "headrace.processors"
FieldType = Literal["string", "int", "float", "bool", "timestamp", "date"]
TS = pa.timestamp("us", tz="UTC")


@dataclass
class Parsed:
    """A processor's answer: ``table`` has one row per input line; ``reason`` is null where it parsed."""

    table: pa.Table
    reason: pa.Array

    @classmethod
    def ok(cls, table: pa.Table) -> Parsed:
        return cls(table, pa.nulls(table.num_rows, pa.string()))


class Processor(Protocol):
    def parse(self, batch: LineBatch) -> Parsed: ...


ProcessorFactory = Callable[[dict[str, Any]], Processor]


class Options(BaseModel):
    """Base for a processor's options: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def first_reason(*pairs: tuple[pa.Array, str]) -> pa.Array:
    """Combine (bad mask, reason) pairs into one reason array: the first reason that applies, else null."""
    out: pa.Array | None = None
    for bad, reason in reversed(pairs):
        bad = pc.fill_null(bad, False)
        out = pc.if_else(bad, pa.scalar(reason), out if out is not None else pa.scalar(None, pa.string()))
    assert out is not None
    return out


_INT = r"^[+-]?\d{1,18}$"
_FLOAT = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^(?i:[+-]?(inf|infinity|nan))$"
_TRUE = ["true", "t", "yes", "y", "1", "on"]
_FALSE = ["false", "f", "no", "n", "0", "off"]


def _slow_iso(values: pa.Array, target: pa.DataType) -> pa.Array:
    out: list[Any] = []
    for v in values.to_pylist():
        try:
            if v is None:
                out.append(None)
            elif target == pa.date32():
                out.append(dt.date.fromisoformat(v))
            else:
                d = dt.datetime.fromisoformat(v)
                out.append(d if d.tzinfo else d.replace(tzinfo=dt.UTC))
        except ValueError:
            out.append(None)
    return pa.array(out, target)


def convert(values: pa.Array, kind: FieldType, fmt: str | None = None) -> tuple[pa.Array, pa.Array]:
    """Convert strings to ``kind``; returns (converted, bad) where bad marks values that did not convert.

    Empty strings become nulls; so does ``-`` for every type but string. Timestamps are UTC
    (``timestamp[us, UTC]``); without ``fmt`` they are
    ISO 8601 (a value without a zone is taken as UTC); with ``fmt`` they are parsed by ``strptime``.
    """
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
    if kind == "string":
        return values, pa.array([False] * len(values))
    values = pc.if_else(pc.equal(values, "-"), pa.scalar(None, values.type), values)
    if kind in ("int", "float"):
        good = pc.match_substring_regex(values, _INT if kind == "int" else _FLOAT)
        clean = pc.if_else(good, values, pa.scalar(None, values.type))
        out = pc.cast(clean, pa.int64() if kind == "int" else pa.float64())
    elif kind == "bool":
        low = pc.utf8_lower(values)
        is_true = pc.is_in(low, value_set=pa.array(_TRUE))
        is_false = pc.is_in(low, value_set=pa.array(_FALSE))
        out = pc.if_else(is_true, True, pc.if_else(is_false, False, pa.scalar(None, pa.bool_())))
    elif kind == "timestamp" and fmt:
        parsed = pc.strptime(values, format=fmt, unit="us", error_is_null=True)
        out = parsed.cast(TS) if parsed.type.tz else pc.assume_timezone(parsed, "UTC")
    elif kind == "timestamp":
        try:
            out = pc.cast(values, TS)
        except pa.ArrowInvalid:
            try:
                out = pc.assume_timezone(pc.cast(values, pa.timestamp("us")), "UTC")
            except pa.ArrowInvalid:
                out = _slow_iso(values, TS)
    elif kind == "date":
        try:
            out = pc.cast(values, pa.date32())
        except pa.ArrowInvalid:
            out = _slow_iso(values, pa.date32())
    else:  # pragma: no cover - guarded by FieldType
        raise ValueError(kind)
    bad = pc.and_(pc.is_valid(values), pc.is_null(out))
    return out, bad


def _find_factory(name: str) -> ProcessorFactory:
    from ._processors_builtin import BUILTINS

    if name in BUILTINS:
        return BUILTINS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == name:
            factory: ProcessorFactory = ep.load()
            return factory
    module, sep, attr = name.partition(":")
    if not sep:
        module, _, attr = name.rpartition(".")
    if not module or not attr:
        raise LookupError(
            f"unknown processor {name!r}: not built in (raw, regex, json, combined, syslog), not an entry point "
            f"in {ENTRY_POINT_GROUP!r}, not a dotted path module:factory"
        )
    try:
        found: ProcessorFactory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise LookupError(f"processor {name!r}: cannot import {module}:{attr} ({exc})") from exc
    return found


def load_processor(name: str, options: dict[str, Any], where: str) -> Processor:
    """Make the processor ``name`` with ``options``; problems are a :class:`ConfigError` naming ``where``."""
    try:
        factory = _find_factory(name)
        return factory(dict(options))
    except LookupError as exc:
        raise ConfigError([f"{where}.processor: {exc}"]) from exc
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            loc = ".".join([where, *(str(p) for p in e["loc"])])
            msg = {"extra_forbidden": "unknown key (check the spelling)", "missing": "required key is missing"}.get(
                e["type"], e["msg"]
            )
            problems.append(f"{loc}: {msg}")
        raise ConfigError(problems) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError([f"{where}: {exc}"]) from exc
