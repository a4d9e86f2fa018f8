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


def test_subscribe_snapshot_progress_on_a_terminal_keeps_log_lines_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.relay.client._progress import SnapshotProgress

    tty = _FakeTTY()
    monkeypatch.setattr(sys, "stderr", tty)
    monkeypatch.setenv("COLUMNS", "400")
    _logging.configure("info", "console")
    try:
        prog = SnapshotProgress(live=True)
        prog.phase("snapshot")
        prog.rows(500)
        prog.phase("snapshot", snapshot_scn=42)
        _logging.get_logger("test").warning("line_during_snapshot")
        prog.rows(700)
        assert prog.rows_read == 1200 and prog.snapshot_scn == 42
        prog.phase("catchup")  # the snapshot is read: the line goes, a done line is logged
        prog.rows(5)  # catch-up events are not snapshot rows
        assert prog.rows_read == 1200 and prog._bar is None
    finally:
        monkeypatch.setattr(sys, "stderr", sys.__stderr__)
        _logging.configure("info", "json")
    text = _ANSI.sub("", tty.getvalue())
    lines = re.split(r"[\r\n]", text)
    hits = [ln for ln in lines if "line_during_snapshot" in ln]
    assert hits and all("rows read" not in ln for ln in hits), text
    done = [ln for ln in lines if "snapshot_progress" in ln]
    assert done and "rows=1200" in done[-1] and "done=True" in done[-1] and "snapshot_scn=42" in done[-1], text


def test_seed_progress_counts_estimates_and_logs_periodically(monkeypatch: pytest.MonkeyPatch) -> None:
    from headrace.bootstrap._seed_progress import SeedProgress

    now = [100.0]
    logged: list[dict[str, object]] = []
    monkeypatch.setattr(
        "headrace.bootstrap._seed_progress.log",
        type("L", (), {"info": staticmethod(lambda event, **kw: logged.append({"event": event, **kw}))})(),
    )
    p = SeedProgress(log_every=5.0, clock=lambda: now[0])
    assert p.status() is None
    p.begin(3, "initial", {"a": 1000, "b": None})
    for _ in range(40):  # 40 pages of 25 rows over 4 s: no periodic line yet
        now[0] += 0.1
        p.add("a", 25)
    assert logged == []
    st = p.status()
    assert st is not None
    assert st["rows"] == 1000 and st["estimated_rows"] == 1000 and st["table"] == "a" and not st["done"]
    assert st["rows_per_s"] == 250.0 and st["eta_seconds"] == 0.0
    now[0] += 1.5
    p.add("b", 10)  # 5.5 s since the start: one line
    assert [e["rows"] for e in logged] == [1010]
    p.add("b", 10)
    assert len(logged) == 1
    p.end(True)
    p.end(False)  # a second end changes nothing
    st = p.status()
    assert st is not None and st["done"] is True and st["tables"]["b"] == {"rows": 20, "estimated_rows": None}
    assert logged[-1]["done"] is True and logged[-1]["rows"] == 1020
    frozen = st["seconds"]
    now[0] += 60
    assert p.status()["seconds"] == frozen  # type: ignore[index]
