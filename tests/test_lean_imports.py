"""The agent command leaves out optional packages that libraries load only because they are installed."""

from __future__ import annotations

import subprocess
import sys

from headrace._lean import OPTIONAL

_PROBE = """
import sys
import click
from headrace.cli import main
cmd = main.get_command(click.Context(main), "agent")
import structlog, tenacity, uvicorn, httpx, starlette.applications  # what the agent runs on
from headrace import _logging
_logging.configure("info", "console")
_logging.get_logger("t").info("works")
try:
    raise ValueError("boom")
except ValueError:
    _logging.get_logger("t").exception("plain traceback")
print(",".join(sorted(m for m in {names!r} if sys.modules.get(m) is not None)))
print(sys.modules.get("pygments") is not None, sys.modules.get("attr") is not None)
"""


def test_agent_command_skips_optional_packages() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(names=sorted(OPTIONAL))], capture_output=True, text=True, check=True
    )
    loaded, pygments_attrs = out.stdout.splitlines()
    assert loaded == "", f"loaded by the agent although optional: {loaded}"
    assert pygments_attrs == "False False"  # what rich would have pulled in
    assert "works" in out.stderr and "ValueError: boom" in out.stderr  # logging and tracebacks still work


def test_other_commands_keep_them() -> None:
    """Only the agent opts out: a batch command's process may still use rich (progress bars)."""
    probe = (
        "import click, sys\nfrom headrace.cli import main\n"
        "main.get_command(click.Context(main), 'collector')\nprint(sys.modules.get('rich', 0) is None)"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
