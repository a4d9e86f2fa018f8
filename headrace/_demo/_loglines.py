"""Realistic log lines for the demo: an access log, a syslog file and a JSON application log.

Plain code (no I/O but :func:`write_lines`): line ``i`` of a kind is the same for the same seed, and
every :data:`BAD_EVERY`-th line of each kind is one a parser must reject (an nginx error line in the
access log, a stack-trace line in the syslog file, a JSON object cut in half), so the demo can check
that demux counts exactly those as errors.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

__all__ = ["BAD_EVERY", "KINDS", "Written", "make_line", "write_lines"]

#: data type → (file name, demux processor)
KINDS = {"web": ("access.log", "combined"), "sys": ("syslog", "syslog"), "app": ("app.json.log", "json")}
BAD_EVERY = 250  # one line in 250 (0.4 %, under demux's default max_error_rate of 1 %) is malformed

_PATHS = ["/", "/index.html", "/api/orders", "/api/orders/42", "/static/app.js", "/login", "/search?q=pumps"]
_STATUSES = [200] * 14 + [304, 301, 404, 404, 500, 503]
_AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "curl/8.5.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Safari/605.1.15",
]
_SYS = [
    ("sshd", "Accepted publickey for deploy from 10.0.{a}.{b} port {port} ssh2"),
    ("CRON", "(root) CMD (run-parts /etc/cron.hourly)"),
    ("kernel", "[UFW BLOCK] IN=eth0 OUT= SRC=203.0.113.{a} DST=10.0.0.5 PROTO=TCP DPT={port}"),
    ("systemd", "Started Session {b} of user deploy."),
]
_MSGS = ["order placed", "payment authorised", "cache miss", "slow query", "user signed in"]


def make_line(kind: str, i: int, rng: random.Random, now: float) -> tuple[str, bool]:
    """Line ``i`` of data type ``kind`` (no newline) and whether a parser must reject it."""
    if i % BAD_EVERY == BAD_EVERY - 1:
        return _BAD[kind], True
    if kind == "web":
        stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))
        return (
            f'192.0.2.{rng.randint(1, 254)} - - [{stamp}] "{rng.choice(["GET"] * 4 + ["POST"])} '
            f'{rng.choice(_PATHS)} HTTP/1.1" {rng.choice(_STATUSES)} {rng.randint(0, 50_000)} '
            f'"https://shop.example/" "{rng.choice(_AGENTS)}"'
        ), False
    if kind == "sys":
        app, text = rng.choice(_SYS)
        stamp = time.strftime("%b %e %H:%M:%S", time.gmtime(now))
        msg = text.format(a=rng.randint(0, 255), b=rng.randint(1, 999), port=rng.randint(1024, 65535))
        return f"<{rng.choice([38, 78, 4, 30])}>{stamp} web01 {app}[{rng.randint(100, 9999)}]: {msg}", False
    record = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{i % 1000:03d}Z",
        "level": rng.choice(["info"] * 6 + ["warning", "error"]),
        "msg": rng.choice(_MSGS),
        "request_id": f"{rng.getrandbits(48):012x}",
        "user_id": rng.randint(1, 5000),
        "duration_ms": round(rng.uniform(0.2, 900.0), 2),
    }
    return json.dumps(record), False


_BAD = {
    "web": "2026/12/06 21:00:00 [error] 812#812: *4411 upstream timed out (110: Connection timed out)",
    "sys": "\tat com.example.shop.OrderService.place(OrderService.java:118)",
    "app": '{"ts": "2026-12-06T21:00:00.000Z", "level": "error", "msg": "connection re',
}


@dataclass
class Written:
    """What :func:`write_lines` wrote: lines and malformed lines per data type, bytes in all."""

    lines: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)


def write_lines(logs: Path, first: int, last: int, written: Written, rotate_at: int = -1, seed: int = 7) -> None:
    """Append lines ``first``..``last - 1`` round-robin over the three files; at ``rotate_at`` rename the
    access log to ``access.log.1`` and start a new one, as logrotate does."""
    rng = random.Random(seed * 1_000_003 + first)
    kinds = list(KINDS)
    files: dict[str, TextIO] = {k: (logs / KINDS[k][0]).open("a") for k in kinds}
    try:
        for i in range(first, last):
            kind = kinds[i % len(kinds)]
            line, bad = make_line(kind, i // len(kinds), rng, time.time())
            files[kind].write(line + "\n")
            written.lines[kind] += 1
            written.bad[kind] += bad
            if i == rotate_at:
                files["web"].close()
                os.rename(logs / KINDS["web"][0], logs / (KINDS["web"][0] + ".1"))
                files["web"] = (logs / KINDS["web"][0]).open("a")
    finally:
        for f in files.values():
            f.close()
