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

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError

from .errors import ConfigError, UsageError

__all__ = ["ENV_PREFIX", "KNOWN_SECTIONS", "Listen", "Section", "env_overrides", "load_section", "parse_listen"]

ENV_PREFIX = "HEADRACE_"
KNOWN_SECTIONS = (
    "agent",
    "collector",
    "archive",
    "demux",
    "load",
    "export",
    "relay",
    "subscriber",
    "bootstrap",
    "sink",
)


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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise ConfigError([f"not valid YAML: {where}{what}"], source=str(p)) from exc
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


def env_overrides(section: str, environ: Mapping[str, str]) -> dict[str, str]:
    """``{key path: variable name}`` of the ``HEADRACE_<SECTION>__…`` variables in ``environ``."""
    prefix = f"{ENV_PREFIX}{section.upper()}__"
    return {
        ".".join([section, *(p.lower() for p in name[len(prefix) :].split("__"))]): name
        for name in sorted(environ)
        if name.upper().startswith(prefix)
    }


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


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at ``loc`` (through nested models, lists and dicts)."""
    current: type[BaseModel] | None = model
    keyed = False  # the previous part was a dict field: this part is one of its keys
    for part in loc[:-1]:
        if isinstance(part, int) or keyed or current is None:
            keyed = False
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        keyed = get_origin(field.annotation) is dict or any(get_origin(a) is dict for a in get_args(field.annotation))
        current = _inner_model(field.annotation)
    return current


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside ``X``, ``X | None``, ``list[X]`` or ``dict[str, X]``, if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(
    section: str, err: ValidationError, model: type[BaseModel] | None = None, env: Mapping[str, str] | None = None
) -> list[str]:
    out = []
    for e in err.errors():
        loc = ".".join([section, *(str(part) for part in e["loc"])])
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
            holder = _model_at(model, tuple(e["loc"])) if model is not None else None
            if holder is not None:
                near = difflib.get_close_matches(str(e["loc"][-1]), list(holder.model_fields), n=1, cutoff=0.6)
                msg += f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(holder.model_fields)})"
            else:
                msg += " (check the spelling)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        by = next((name for path, name in (env or {}).items() if loc == path or loc.startswith(path + ".")), None)
        out.append(f"{loc}: {msg}" + (f" (set by the environment variable {by})" if by else ""))
    return out


def load_section(
    path: str | os.PathLike[str] | None,
    section: str,
    model: type[S],
    environ: Mapping[str, str] | None = None,
    *,
    require: bool = False,
    command: str | None = None,
) -> S:
    """Read ``section`` of the YAML file at ``path`` (or only defaults and environment when ``None``).

    With ``require`` (the commands' use), a missing file or section is an error saying so, unless
    ``HEADRACE_<SECTION>__…`` variables configure it: a daemon or job never runs on defaults that
    write into the current folder by accident. Raises :class:`~headrace.errors.ConfigError` listing
    every problem with its key path, the nearest known key for a misspelled one, and the environment
    variable that set a bad value.
    """
    if section not in KNOWN_SECTIONS:
        raise ValueError(f"unknown section {section!r}")
    environ = os.environ if environ is None else environ
    env = env_overrides(section, environ)
    data = _read_file(path) if path is not None else {}
    if require and section not in data and not env:
        if path is None:
            raise UsageError(
                f"no --config: `headrace {command or section}` would run on built-in defaults and write under "
                f"./headrace-data in the current folder. Give --config FILE with a '{section}:' section (or set "
                f"HEADRACE_{section.upper()}__… variables); `headrace demo` runs everything on defaults"
            )
        raise ConfigError(
            [f"{section}: no such section in the file; add one (`{section}: {{}}` runs on the defaults)"], str(path)
        )
    raw = data.get(section) or {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{section}: must be a mapping of keys"], str(path or "config"))
    raw = _apply_env(section, dict(raw), environ)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(section, exc, model, env), str(path or "config")) from exc
