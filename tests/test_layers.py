"""The layers a newcomer can see (docs/wiring.md): commands -> runtime -> domain -> engine, and inside the domain
live -> session -> affect/speech. No module imports a higher layer, at the top or inside a function."""

from __future__ import annotations

import ast
from pathlib import Path

import edge_cer
from edge_cer.cli import COMMANDS

ROOT = Path(edge_cer.__file__).parent
# Highest first. A module belongs to the first layer whose prefix it has; anything else is the engine (layer 0).
# A command that lives in a domain package (`edge-cer analyze`, `transcribe`, `export-data`) keeps its package's
# layer: its `run(args)` drives only that package.
LAYERS = (
    ("commands", ("edge_cer.__main__", "edge_cer.cli", "edge_cer.commands", "edge_cer.tui", "edge_cer.bench",
                  "edge_cer.api", "export", *(module for module, _ in COMMANDS.values() if module.count(".") == 1))),
    ("runtime", ("edge_cer.runtime", "edge_cer.headless")),
    ("live", ("edge_cer.live",)),
    ("analysis", ("edge_cer.analysis",)),
    ("session", ("edge_cer.session",)),
    ("affect and speech", ("edge_cer.affect", "edge_cer.speech")),
)
RANK = {name: len(LAYERS) - i for i, (name, _) in enumerate(LAYERS)}


def layer(module: str) -> str:
    for name, prefixes in LAYERS:
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return name
    return "engine"


def imports(path: Path, module: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else ".".join(module.split(".")[:-node.level] + [node.module])
            names.add(base)
    return {n for n in names if n.split(".")[0] in ("edge_cer", "export")}


def test_no_module_imports_a_higher_layer():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("edge_cer", *path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        mine = layer(module)
        for target in imports(path, module):
            theirs = layer(target)
            if RANK.get(theirs, 0) > RANK.get(mine, 0):
                wrong.append(f"{module} ({mine}) imports {target} ({theirs})")
    assert not wrong, "\n".join(wrong)


def test_affect_and_speech_do_not_import_each_other():
    for a, b in (("affect", "speech"), ("speech", "affect")):
        for path in (ROOT / a).rglob("*.py"):
            assert not any(t.startswith(f"edge_cer.{b}") for t in imports(path, f"edge_cer.{a}.{path.stem}")), path
