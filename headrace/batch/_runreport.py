"""What a batch job (archive, demux, load, export) reports: a progress bar on a terminal, a summary.

The summary decides the run's outcome (``exit_code``): 0 when it did its work; 1 when something
failed, including a data type whose records mostly failed to parse (above ``max_error_rate``: a wrong
processor is a failure, not a success with errors); 5 when there was nothing to do for a reason the
user can act on (``idle``: sink files still open), said in the summary with what to do.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EXIT_IDLE", "Summary", "progress"]

#: exit status of a batch job that found nothing to do for a reason the user can act on
EXIT_IDLE = 5


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
    reasons: Counter[str] = field(default_factory=Counter)  # error reason → records
    by_type: dict[str, tuple[int, int, Counter[str]]] = field(default_factory=dict)  # → good, errors, reasons
    idle: str | None = None  # why there was nothing to do, and what to do about it

    def add_errors(self, data_type: str, good: int, errors: int, reasons: Mapping[str, int]) -> None:
        """Count one part's parsed and failed records of ``data_type`` and its errors' reasons."""
        g, e, r = self.by_type.get(data_type, (0, 0, Counter()))
        r.update(reasons)
        self.by_type[data_type] = (g + good, e + errors, r)
        self.reasons.update(reasons)

    def check_error_rate(self, max_rate: float, setting: str) -> None:
        """A failure for each data type whose share of failed records is above ``max_rate``."""
        for data_type, (good, errors, reasons) in sorted(self.by_type.items()):
            total = good + errors
            if total and errors / total > max_rate:
                self.failures.append(
                    f"{data_type}: {errors} of {total} records failed to parse ({errors / total:.1%}, above "
                    f"{setting} = {max_rate:g}); is its processor the right one? top reasons: {_top(reasons)}"
                )

    def top_reasons(self) -> str:
        """``'reason' ×count`` of the three most common error reasons of the run."""
        return _top(self.reasons)

    @property
    def exit_code(self) -> int:
        """0: the work was done; 1: something failed; :data:`EXIT_IDLE`: nothing to do (see ``idle``)."""
        if self.failures:
            return 1
        return EXIT_IDLE if self.idle and not self.files else 0

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-9)

    @property
    def ok(self) -> bool:
        return not self.failures

    def line(self) -> str:
        """The summary: one line of counts, then the top error reasons and why nothing was done, if so."""
        mb = self.bytes / 1e6
        status = {0: "ok", EXIT_IDLE: "NOTHING TO DO"}.get(self.exit_code, f"FAILED ({len(self.failures)} failures)")
        chunks = f"{self.chunks} chunks, " if self.counts_chunks else ""
        out = (
            f"headrace {self.job}: {status}: {self.files} files, {chunks}{self.records} records, "
            f"{self.errors} errors, {mb:.1f} MB in {self.seconds:.2f} s ({mb / self.seconds:.1f} MB/s)"
        )
        if self.reasons:
            out += f"\n  top error reasons: {self.top_reasons()}"
        if self.exit_code == EXIT_IDLE:
            out += f"\n  {self.idle}"
        return out


def _top(reasons: Counter[str], n: int = 3) -> str:
    return ", ".join(f"{r!r} ×{c}" for r, c in reasons.most_common(n)) or "none"


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
