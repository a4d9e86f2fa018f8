"""Where a benchmark script writes its result dict.

``python -m bench`` runs each script as its own process with ``HEADRACE_BENCH_JSON`` set to a file it
reads back afterwards; run by hand, a script writes ``bench/results/<name>.json`` as it always did
(scripts that only printed a table before write nothing unless the variable is set).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def write_result(name: str, result: dict[str, Any], *, default_file: bool = True) -> None:
    """Write ``result`` as JSON to ``$HEADRACE_BENCH_JSON``, else (``default_file``) to bench/results/NAME.json."""
    target = os.environ.get("HEADRACE_BENCH_JSON")
    if target:
        path = Path(target)
    elif default_file:
        path = RESULTS / f"{name}.json"
    else:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
