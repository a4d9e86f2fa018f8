"""``headrace tap``: the same parse as demux, shown per record, with reasons and a truthful exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import write_config

SYSLOG = (
    b"Jun 15 04:06:20 combo syslogd 1.4.1: restart.\n"
    b"Jun 15 04:06:21 combo sshd[12]: Accepted publickey\n"
    b"not syslog at all\n"
    b"<34>1 2026-11-18T10:00:00Z h app 7 ID - hello\n"
)


def tap(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    cmd = [sys.executable, "-m", "headrace", "tap", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, timeout=60)


def test_tap_shows_each_record_as_demux_parses_it_and_exits_1_on_failures() -> None:
    p = tap("--processor", "syslog", "--format", "json", stdin=SYSLOG)
    assert p.returncode == 1, p.stderr
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    starts = [0]
    for line in SYSLOG.splitlines(keepends=True)[:-1]:
        starts.append(starts[-1] + len(line))
    assert [r["_offset"] for r in rows] == starts  # input order, the byte offset of each line
    assert (rows[0]["app_name"], rows[0]["message"]) == (None, "syslogd 1.4.1: restart.")
    assert (rows[1]["app_name"], rows[1]["procid"], rows[1]["hostname"]) == ("sshd", "12", "combo")
    reason = "not an RFC 5424 or RFC 3164 syslog line"
    assert rows[2] == {"_offset": starts[2], "_error": reason, "raw": "not syslog at all"}
    assert rows[3]["timestamp"] == "2026-11-18T10:00:00+00:00" and rows[3]["severity"] == 2
    assert b"4 records, 3 parsed, 1 failed" in p.stderr
    # every line parsed: exit 0; the table form names fields and values
    p = tap("--processor", "syslog", "--format", "table", stdin=SYSLOG[: starts[2]])
    assert p.returncode == 0 and b"Accepted publickey" in p.stdout and b"app_name" in p.stdout, p.stderr


def test_tap_takes_processor_and_options_from_the_config_and_refuses_bad_ones(tmp_path: Path) -> None:
    sample = tmp_path / "pay.log"
    sample.write_bytes(b"2026-11-18T10:00:00Z INFO 42 paid\n2026-11-18T10:00:01Z WARN x paid\n")
    regex = {"processor": "regex", "pattern": r"(?P<ts>\S+) (?P<level>\S+) (?P<amount>\S+)", "types": {"amount": "int"}}
    cfg = write_config(tmp_path / "h.yaml", {"demux": {"types": {"pay": regex}}})
    p = tap("--config", str(cfg), "--data-type", "pay", "--format", "json", str(sample))
    assert p.returncode == 1, p.stderr
    rows = [json.loads(line) for line in p.stdout.decode().splitlines()]
    assert rows[0]["amount"] == 42 and rows[0]["level"] == "INFO"
    assert "amount" in rows[1]["_error"] and rows[1]["raw"].endswith("WARN x paid"), rows[1]
    # options on the command line override the config's
    p = tap("--config", str(cfg), "--data-type", "pay", "-o", "types={}", "--format", "json", str(sample))
    assert p.returncode == 0 and json.loads(p.stdout.decode().splitlines()[1])["amount"] == "x", p.stderr
    # mistakes are usage errors (2) that say what to change
    p = tap("--processor", "nope", stdin=SYSLOG)
    assert p.returncode == 2 and b"tap.processor" in p.stderr, p.stderr
    p = tap("--processor", "regex", "-o", "pattern=(", stdin=SYSLOG)
    assert p.returncode == 2 and b"pattern" in p.stderr, p.stderr
    p = tap("--data-type", "pay", stdin=SYSLOG)
    assert p.returncode == 2 and b"--config" in p.stderr, p.stderr
    p = tap(stdin=SYSLOG)
    assert p.returncode == 2 and b"--processor" in p.stderr, p.stderr
