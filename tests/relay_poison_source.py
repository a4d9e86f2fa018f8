"""A SQLite change source with a conversion bug, for tests of what the relay does when capture meets a
value it cannot encode.

Why an injected fault: after the value fixes of issue 10 no legal SQLite value is meant to be
unrepresentable, yet a converter bug in any source (a new type, a new server version) must still
not stop capture silently or forever. This source is the real :class:`SqliteSource` except that a
text value starting with ``poison`` reaches the encoder as ``bytes``, whatever the column's kind (as
if its converter had a bug). In an INTEGER column that makes
:class:`~headrace.errors.UnrepresentableValue` come out of the real row encoder, in a real relay
process. It is installed through the public ``SOURCE_CLASSES`` registry by :func:`sitecustomize_dir`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from headrace.relay.sources import RowChange
from headrace.relay.sources.sqlite import SqliteSource

HERE = Path(__file__).parent


def _poisoned(converted: Any, raw: str | None) -> Any:
    if converted is None or raw is None:
        return converted
    bad = {k: v.encode() for k, v in json.loads(raw).items() if isinstance(v, str) and v.startswith("poison")}
    return {**converted, **bad} if bad else converted


class PoisonSqliteSource(SqliteSource):
    """:class:`SqliteSource` whose converter lets ``poison…`` text through unconverted."""

    def _changes(self, rows: list[Any], reals: Any) -> list[RowChange]:
        out = super()._changes(rows, reals)
        return [
            dataclasses.replace(ch, before=_poisoned(ch.before, r[4]), after=_poisoned(ch.after, r[5]))
            for r, ch in zip(rows, out, strict=True)
        ]


def sitecustomize_dir(tmp: Path) -> dict[str, str]:
    """Environment for a ``headrace relay`` process whose ``sqlite:`` source is :class:`PoisonSqliteSource`."""
    d = tmp / "poison-site"
    d.mkdir(exist_ok=True)
    (d / "sitecustomize.py").write_text(
        "from headrace.relay.sources import SOURCE_CLASSES\n"
        "SOURCE_CLASSES['sqlite'] = 'relay_poison_source:PoisonSqliteSource'\n"
    )
    import os

    path = [str(d), str(HERE), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)]
    return {"PYTHONPATH": os.pathsep.join(path)}
