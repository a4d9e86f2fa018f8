"""Loading and validating the one YAML configuration file.

The file has one top-level section per part (``agent:``, ``collector:``, ``relay:`` …). A command
reads its own section into a pydantic model with ``extra="forbid"``, so a misspelled key is an error
that names the key's path. An unknown top-level section is an error too.

Environment variables override keys: ``HEADRACE_<SECTION>__<KEY>[__<SUBKEY>…]``, case-insensitive,
the value parsed as YAML (so ``HEADRACE_COLLECTOR__ROLL_BYTES=1048576`` is a number and
``HEADRACE_AGENT__COLLECTORS='["http://a:7070"]'`` a list). List items are addressed by index
(``HEADRACE_AGENT__SOURCES__0__PATH``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "KNOWN_SECTIONS", "Listen", "Section", "load_section", "parse_listen"]

ENV_PREFIX = "HEADRACE_"
KNOWN_SECTIONS = ("agent", "collector", "archive", "demux", "load", "export", "relay", "subscriber", "bootstrap")


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def parse_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:port`` for IPv6) into its parts, validating the port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (for example 127.0.0.1:7070)")
    return host.strip("[]"), int(port)


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


Listen = Annotated[str, AfterValidator(_check_listen)]

S = TypeVar("S", bound=Section)


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"cannot read {p}: {exc.strerror}"], source=str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"not valid YAML: {exc}"], source=str(p)) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(["the top level must be a mapping of sections (agent:, collector:, …)"], str(p))
    unknown = [k for k in data if k not in KNOWN_SECTIONS]
    if unknown:
        raise ConfigError([f"{k}: unknown section (known: {', '.join(KNOWN_SECTIONS)})" for k in unknown], str(p))
    return data


def _apply_env(section: str, data: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    for name, raw in sorted(environ.items()):
        if not name.upper().startswith(prefix):
            continue
        path = [p.lower() for p in name[len(prefix) :].split("__")]
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError([f"{name}: not a valid YAML value: {exc}"], "environment") from exc
        node: Any = data
        for i, key in enumerate(path):
            last = i == len(path) - 1
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise ConfigError([f"{name}: no list item {key} to override"], "environment")
                if last:
                    node[int(key)] = value
                else:
                    node = node[int(key)]
            elif isinstance(node, dict):
                if last:
                    node[key] = value
                else:
                    node = node.setdefault(key, {})
            else:
                raise ConfigError([f"{name}: {'.'.join(path[:i])} is not a mapping or list"], "environment")
    return data


def _format_errors(section: str, err: ValidationError) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join([section, *(str(part) for part in e["loc"])])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        out.append(f"{loc}: {msg}")
    return out


def load_section(
    path: str | os.PathLike[str] | None,
    section: str,
    model: type[S],
    environ: Mapping[str, str] | None = None,
) -> S:
    """Read ``section`` of the YAML file at ``path`` (or only defaults and environment when ``None``).

    Raises :class:`~headrace.errors.ConfigError` listing every problem with its key path.
    """
    if section not in KNOWN_SECTIONS:
        raise ValueError(f"unknown section {section!r}")
    data = _read_file(path) if path is not None else {}
    raw = data.get(section) or {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{section}: must be a mapping of keys"], str(path or "config"))
    raw = _apply_env(section, dict(raw), os.environ if environ is None else environ)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(section, exc), str(path or "config")) from exc
