"""The import rules of docs/architecture.md, checked on the source (an AST walk, nothing imported).

* A part (agents, collectors, batch, relay, bootstrap, sinks) imports shared modules, itself, and
  another part only along an allowed arrow and only through that part's public names — except the
  private modules listed in ``ALLOWED_PRIVATE`` (each with the reason the architecture gives).
* Shared modules (the top-level ``headrace/_*.py`` that are not the command layer) import no part.
* Nothing but the command layer imports the command layer.
* The shipped DAGs import only public names.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "headrace"
PARTS = {"agents", "collectors", "batch", "relay", "bootstrap", "sinks"}
#: the ``headrace`` command's modules: they wire parts together and may import any of them
#: ``verify`` (headrace verify / reconcile) reads every part's files and state to check them against
#: each other, as ``_check`` and ``_overview`` do
COMMAND = {"cli", "__main__", "_demo", "_check", "_overview", "_status_cli", "_up", "_up_status", "verify"}
#: part -> the parts whose public API it may import
ARROWS = {
    "agents": set(),
    "collectors": set(),
    "batch": set(),
    "relay": set(),
    "bootstrap": {"relay"},  # the event model, the client, the capture sources for seeding
    "sinks": {"relay"},  # the client and the event model
}
#: private modules of another part that a part may import, and why (docs/architecture.md, "Rules")
ALLOWED_PRIVATE = {
    ("bootstrap", "headrace.relay._protocol"): "the bootstrap server speaks the relay protocol (/v1/catchup)",
    ("bootstrap", "headrace.relay._buffer"): "catch-up pages are cut by the ring buffer's pure read_windows()",
    ("bootstrap", "headrace.relay._codec"): "catch-up serves the relay's encoded windows (EncodedWindow) as they are",
    ("bootstrap", "headrace.relay._event"): "snapshot pages reuse the relay's frames (peek_header, with_window_end)",
    ("bootstrap", "headrace.relay.sources._base"): "seeding reads a capture source's consistent snapshot",
    ("bootstrap", "headrace.relay.sources._pgsnapshot"): "seeding shares PostgreSQL capture's snapshot slot",
    ("bootstrap", "headrace.relay.sources._pgstream"): "seeding and TOAST filling share pgoutput's names",
    ("bootstrap", "headrace.relay.sources._mysqltypes"): "seeding shares MySQL capture's SCN encoding",
    ("bootstrap", "headrace.relay.sources._pgcolumns"): "seeding encodes PostgreSQL pages with capture's parsers",
    ("sinks", "headrace.relay._protocol"): "the lake sink orders snapshot pages by their `after` cursors",
    ("sinks", "headrace.relay.client._cli"): "the NATS sink publishes events as `headrace subscribe` prints them",
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path, module: str = "") -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) for every ``headrace`` import in ``path`` (the module ``module``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "headrace":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] == "headrace":
                for alias in node.names:
                    yield target, alias.name, node.lineno


def _part(module: str) -> str | None:
    bits = module.split(".")
    return bits[1] if len(bits) > 1 and bits[1] in PARTS else None


def _layer(module: str) -> str:
    bits = module.split(".")
    if len(bits) > 1 and bits[1] in COMMAND:
        return "command"
    return "part" if _part(module) else "shared"


def _private(module: str, name: str | None) -> bool:
    """True when ``module`` (or ``name`` from it, unless it is a submodule) is not public."""
    if any(b.startswith("_") and b != "__init__" for b in module.split(".")[1:]):
        return True
    return name is not None and name.startswith("_")


def _violations(files: list[tuple[Path, str]]) -> list[str]:
    found = []
    for path, me in files:
        for target, name, line in _imports(path, me):
            where = f"{path.name}:{line} ({me}): imports {target}{'.' + name if name else ''}"
            if _layer(target) == "command" and _layer(me) != "command":
                found.append(f"{where} (the command layer; nothing else may import it)")
            if _layer(me) == "shared" and _part(target):
                found.append(f"{where} (a shared module may not import a part)")
            mine, theirs = _part(me), _part(target)
            if mine is None or theirs is None or mine == theirs:
                continue
            if theirs not in ARROWS[mine]:
                found.append(f"{where} (no arrow {mine} → {theirs})")
            elif _private(target, name) and (mine, target) not in ALLOWED_PRIVATE:
                found.append(f"{where} (a private name of {theirs}; only its public API may be used)")
    return found


def test_parts_shared_modules_and_command_layer_follow_the_rules() -> None:
    assert _violations([(p, _module(p)) for p in sorted(PKG.rglob("*.py"))]) == []


def test_dags_import_only_public_names() -> None:
    dags = sorted((ROOT / "dags").glob("*.py"))
    assert dags
    private = [
        f"{p.relative_to(ROOT)}:{line}: {target}{'.' + name if name else ''}"
        for p in dags
        for target, name, line in _imports(p)
        if _private(target, name)
    ]
    assert private == []


def test_the_rules_see_violations(tmp_path: Path) -> None:
    """The checker is not vacuous: a module written against the rules is caught."""
    bad = tmp_path / "_probe.py"
    bad.write_text("from ..collectors import run_collector\nfrom .._demo import main\nfrom ..relay._buffer import x\n")
    shared = tmp_path / "_shared.py"
    shared.write_text("import headrace.batch\n")
    sinks = tmp_path / "_sink.py"
    sinks.write_text("from ...relay._buffer import read_windows\n")
    found = "\n".join(
        _violations([(bad, "headrace.agents._probe"), (shared, "headrace._shared"), (sinks, "headrace.sinks.x._sink")])
    )
    assert "a shared module may not import a part" in found and "a private name of relay" in found
    assert "no arrow agents → collectors" in found and "the command layer" in found
    assert "no arrow agents → relay" in found
