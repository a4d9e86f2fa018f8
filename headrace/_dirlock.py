"""One process per folder: an exclusive ``flock`` on ``<folder>/.lock``, released when the process ends."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import FatalError

__all__ = ["lock_dir", "unlock_dir"]


def lock_dir(path: str | os.PathLike[str], what: str, who: str) -> int:
    """Create ``path`` and lock it; raise :class:`FatalError` naming ``what`` if another ``who`` holds it."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise FatalError(f"another {who} is using {what} {folder}; give each {who} its own {what}") from None
    return fd


def unlock_dir(fd: int | None) -> None:
    """Release a lock taken by :func:`lock_dir` (closing the descriptor releases the flock)."""
    if fd is not None:
        os.close(fd)
