"""What a batch job (archive, demux, load) reports: a progress bar on a terminal, a one-line summary."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Summary", "progress"]


@dataclass
class Summary:
    """Counts of one run; ``line()`` is the one-line summary every run ends with."""

    job: str
    files: int = 0
    chunks: int = 0
    records: int = 0
    errors: int = 0
    bytes: int = 0
    started: float = field(default_factory=time.monotonic)
    failures: list[str] = field(default_factory=list)
    counts_chunks: bool = True  # False for jobs that read no chunks (export): the line leaves them out

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        mb = self.bytes / 1e6
        status = "ok" if self.ok else f"FAILED ({len(self.failures)} failures)"
        chunks = f"{self.chunks} chunks, " if self.counts_chunks else ""
        return (
            f"headrace {self.job}: {status}: {self.files} files, {chunks}{self.records} records, "
            f"{self.errors} errors, {mb:.1f} MB in {self.seconds:.2f} s ({mb / self.seconds:.1f} MB/s)"
        )


class _Progress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, n: float = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, n)


@contextmanager
def progress(description: str, total: float | None) -> Iterator[_Progress]:
    """A rich progress bar on stderr when it is a terminal; a silent stand-in otherwise."""
    if not sys.stderr.isatty():
        yield _Progress(None, None)
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        yield _Progress(bar, bar.add_task(description, total=total))
