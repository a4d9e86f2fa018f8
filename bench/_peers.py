"""Helpers shared by the peer benchmarks (log shipping, idle agent): processes, CPU, rsyslog configs, lines.

rsyslog always runs as a private ``rsyslogd -n -f CONF -i PIDFILE`` in a temporary directory, with only
the modules its config loads (no imuxsock, no imklog): the machine's own rsyslog is never touched.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import httpx
import yaml
from _procs import die_with_parent

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"


def ctxt_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of all the live threads of ``pid`` (its wakeups)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:  # a thread that ended meanwhile
            continue
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def collector_config(tmp: Path, port: int) -> Path:
    path = tmp / "c.yaml"
    cfg = {"collector": {"listen": f"127.0.0.1:{port}", "sink_dir": str(tmp / "sink"), "name": "bench"}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def agent_config(tmp: Path, port: int, collector_port: int, glob: str) -> Path:
    path = tmp / "a.yaml"
    cfg = {
        "agent": {
            "name": "bench",
            "collectors": [f"http://127.0.0.1:{collector_port}"],
            "state_dir": str(tmp / "agent"),
            "listen": f"127.0.0.1:{port}",
            "sources": [{"path": glob, "data_type": "app"}],
        }
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def agent_acked(port: int) -> tuple[int, int]:
    """(streams, bytes acked) from the agent's ``/v1/status``."""
    st = httpx.get(f"http://127.0.0.1:{port}/v1/status", timeout=5).json()
    return len(st["streams"]), sum(s["acked_offset"] for s in st["streams"])


# rsyslog -----------------------------------------------------------------------------------------------------------


def rsyslog_version() -> str:
    out = subprocess.run([RSYSLOGD, "-v"], capture_output=True, text=True, check=False).stdout
    return out.splitlines()[0].split()[1] if out else "?"


def rsyslog_sender_conf(work: Path, glob: str, port: int) -> str:
    """imfile (inotify) → omfwd over TCP, an in-memory action queue: the agent's counterpart."""
    return f"""
global(workDirectory="{work}" maxMessageSize="64k" net.enableDNS="off")
module(load="imfile" mode="inotify")
input(type="imfile" file="{glob}" tag="bench:" ruleset="fwd" addMetadata="off")
ruleset(name="fwd") {{
  action(type="omfwd" target="127.0.0.1" port="{port}" protocol="tcp" template="RSYSLOG_ForwardFormat"
         queue.type="LinkedList" queue.size="200000" queue.dequeueBatchSize="1024"
         action.resumeRetryCount="-1" action.resumeInterval="1")
}}
"""


def rsyslog_receiver_conf(work: Path, port: int, out: Path) -> str:
    """imtcp → omfile writing each message's text as it was read (the collector's counterpart)."""
    return f"""
global(workDirectory="{work}" maxMessageSize="64k" net.enableDNS="off")
module(load="imtcp")
template(name="line" type="string" string="%msg:2:$%\\n")
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="out")
ruleset(name="out") {{
  action(type="omfile" file="{out}" template="line" ioBufferSize="256k" flushOnTXEnd="on")
}}
"""


def start_rsyslogd(tmp: Path, name: str, conf: str) -> subprocess.Popen[bytes]:
    """A private ``rsyslogd -n`` with ``conf`` (its work dir, pid file and log in ``tmp/name``)."""
    d = tmp / name
    (d / "work").mkdir(parents=True, exist_ok=True)
    (d / "rsyslog.conf").write_text(conf)
    return subprocess.Popen(
        [RSYSLOGD, "-n", "-f", str(d / "rsyslog.conf"), "-i", str(d / "rsyslogd.pid")],
        stdout=open(d / "rsyslogd.log", "wb"),
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )


def wait_listening(port: int, timeout: float = 15) -> None:
    """Until something listens on 127.0.0.1:``port`` (read from /proc/net/tcp, no connection made)."""
    want = f"0100007F:{port:04X}"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
            f = line.split()
            if f[1] == want and f[3] == "0A":  # LISTEN
                return
        time.sleep(0.02)
    raise SystemExit(f"nothing listens on port {port}")


# lines --------------------------------------------------------------------------------------------------------------


def text_pool(seed: int = 7) -> list[str]:
    """Realistic one-line texts (access, JSON and syslog lines of bench/wire_compression.py's corpus)."""
    from wire_compression import corpus_lines

    lines = corpus_lines(seed, 1 << 20).decode().splitlines()
    return [ln for ln in lines if ln and not ln.startswith(" ") and "Traceback" not in ln]


def make_block(file_no: int, line_bytes: int, total: int, pool: list[str], seed: int) -> bytes:
    """About ``total`` bytes of ``line_bytes``-byte lines (newline included), each starting with a unique
    ``FFF-SSSSSSSSS`` id, then realistic text cut or repeated to fit; no leading or trailing space."""
    rng = random.Random(seed * 1000 + file_no)
    out = []
    for seq in range(max(1, total // line_bytes)):
        head = f"{file_no:03d}-{seq:09d} "
        body = rng.choice(pool)
        while len(body) < line_bytes:
            body += " " + rng.choice(pool)
        body = body[: line_bytes - len(head) - 2] + "."
        out.append(head + body + "\n")
    return "".join(out).encode()


def checksum(lines: Iterable[bytes]) -> tuple[int, int]:
    """(line count, an order-independent sum of the lines' CRC-32s): the same lines in any order agree."""
    n = total = 0
    for line in lines:
        n += 1
        total += zlib.crc32(line)
    return n, total


def file_lines(paths: Iterable[Path]) -> Iterable[bytes]:
    for p in paths:
        if not p.exists():  # nothing arrived there: the completeness check reports the lines missing
            continue
        with open(p, "rb") as f:
            yield from f
