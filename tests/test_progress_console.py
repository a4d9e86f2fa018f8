"""Log lines written while a batch job's progress bar is live go through the bar's console: each is
rendered on its own line above the bar, never glued onto the bar's line."""

from __future__ import annotations

import io
import logging
import re
import sys

import pytest

from headrace import _logging
from headrace.batch._runreport import progress

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_log_lines_print_above_a_live_bar(monkeypatch: pytest.MonkeyPatch, fmt: str) -> None:
    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setenv("COLUMNS", "100")
    _logging.configure("info", fmt)  # type: ignore[arg-type]
    try:
        with progress("demuxing", 10) as bar:
            bar.advance(3)
            _logging.get_logger("test").info("structlog_line_during_bar", n=1)
            logging.getLogger("test.stdlib").warning("stdlib_line_during_bar")
            bar.advance(3)
    finally:
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        _logging.configure("info", "json")
    text = _ANSI.sub("", tty.getvalue())
    lines = re.split(r"[\r\n]", text)
    for needle in ("structlog_line_during_bar", "stdlib_line_during_bar"):
        hits = [ln for ln in lines if needle in ln]
        assert hits, f"{needle} was not written at all: {text!r}"
        for ln in hits:
            assert "demuxing" not in ln and "━" not in ln, f"a log line glued onto the bar: {ln!r}"
            assert not ln.startswith(" "), f"a log line not at the start of a line: {ln!r}"
