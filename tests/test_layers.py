"""The import graph of ift_snn: no cycles, and no import up the layers of docs/ARCHITECTURE.md (lazy imports
inside functions included). The layers, top to bottom, as the test reads them:"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ift_snn"

LAYERS = [
    ["ift_snn", "ift_snn.cli", "ift_snn.events.commands"],                    # entry points
    ["ift_snn.experiments", "ift_snn.events.bench"],                          # experiments, benchmarks
    ["ift_snn.integrations"],                                                 # PyTorch, conversions, NIR
    ["ift_snn.training", "ift_snn.events.train", "ift_snn.events.srm_network"],  # networks, training loops, data
    ["ift_snn.ops", "ift_snn.recurrent", "ift_snn.events", "ift_snn.optim", "ift_snn.files"],  # array APIs
    ["ift_snn.backends"],                                                     # numbers
    ["ift_snn.codegen"],                                                      # text from derivations
    ["ift_snn.symbolic.stability"],                                           # diagnostics read from a derivation
    ["ift_snn.symbolic"],                                                     # derivations, proofs
    ["ift_snn.neurons", "ift_snn.methods"],                                   # definitions
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(("ift_snn",) + path.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
        out[name] = path
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for t in targets:
                while t not in mods and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in mods and t != m:
                    graph[m].add(t)
    return graph


def _layer(module: str) -> int:
    best = (-1, -1)
    for i, group in enumerate(LAYERS):
        for prefix in group:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best[1]:
                best = (i, len(prefix))
    assert best[0] >= 0, f"{module} is in no layer of this test (add it to LAYERS and to docs/ARCHITECTURE.md)"
    return best[0]


def test_no_import_goes_up_the_layers():
    graph = _graph()
    up = [f"{m} -> {d}" for m, deps in sorted(graph.items()) for d in sorted(deps)
          if d != "ift_snn" and _layer(d) < _layer(m)]
    assert up == []


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for d in sorted(graph[m]):
            if d == "ift_snn":  # the package's __init__ re-exports; modules import it only for its subpackages
                continue
            if state.get(d) == 1:
                cycles.append(path[path.index(d):] + [d])
            elif d not in state:
                visit(d, path + [d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []
