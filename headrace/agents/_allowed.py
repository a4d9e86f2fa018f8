"""Where the control API may point the agent: ``agent.allowed_paths``.

A source added at run time (``POST /v1/sources``) is a glob the agent will open files under, with
the agent's privileges; these checks keep it inside folders the operator chose:

* :func:`pattern_problem` (at the request): the glob has no ``..`` component and the folder it
  starts from (its part without wildcards), with symlinks resolved, lies inside an allowed root;
* :func:`file_problem` (before a matched file is opened): the file itself, symlinks resolved, lies
  inside an allowed root, so a symlink in an allowed folder cannot lead out of it.

Roots are ``agent.allowed_paths`` or, when that is not set, the folders of the configured sources.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from ._config import AgentConfig
from ._discover import watch_root

__all__ = ["allowed_roots", "file_problem", "pattern_problem"]


def allowed_roots(cfg: AgentConfig) -> list[str]:
    """The resolved roots for ``cfg`` (``allowed_paths``, or the configured sources' folders)."""
    raw: Iterable[str] = (
        cfg.allowed_paths if cfg.allowed_paths is not None else (watch_root(s.path)[0] for s in cfg.sources)
    )
    return sorted({os.path.realpath(os.path.expanduser(r)) for r in raw})


def _inside(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip(os.sep) + os.sep) for r in roots)


def pattern_problem(pattern: str, roots: list[str]) -> str | None:
    """Why the control API may not add a source with glob ``pattern``; None when it may."""
    if not roots:
        return (
            "no folder is allowed for run-time sources: list the folders in agent.allowed_paths "
            "(by default they are the folders of the configured sources, and there are none)"
        )
    if ".." in pattern.replace("\\", "/").split("/"):
        return f"path {pattern!r} has a '..' component; give the path without it"
    start = os.path.realpath(watch_root(pattern)[0])
    if not _inside(start, roots):
        return f"path {pattern!r} is outside agent.allowed_paths {roots}; add its folder there (and reload) first"
    return None


def file_problem(path: str, roots: list[str]) -> str | None:
    """Why a file a run-time source matched may not be opened (it resolves outside ``roots``); None if it may."""
    real = os.path.realpath(path)
    if _inside(real, roots):
        return None
    return f"{path} resolves to {real}, outside agent.allowed_paths {roots}"
