"""The layout's rules, checked on the source: no import circle anywhere in ``src/`` (imports
inside functions included), and each layer imports only the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """``{module: modules of the package it imports}``, every import statement counted
    (also inside functions and ``if TYPE_CHECKING`` blocks: a circle there is still a
    responsibility in the wrong file)."""
    modules = {_module_name(p): p for p in SRC.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        is_package = path.name == "__init__.py"
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(name, is_package, node)
                # ``from base import x``: the module base.x, or a name defined in base
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                    for alias in node.names
                ]
            for target in targets:
                # the deepest module of the package the name refers to
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("pairot"):
                    graph[name].add(target)
    return graph


def find_circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    edges = graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return circles


def test_the_graph_sees_imports_inside_functions():
    """The walk counts in-function and relative imports (else the test could not fail)."""
    graph = import_graph()
    assert "pairot.pp" in graph["pairot"]
    assert any(t.startswith("pairot.pp.") for t in graph["pairot.pp._preprocess"])


def test_find_circles_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_circles(graph) == [["a", "b", "c"]]


def test_no_import_circle_in_src():
    circles = find_circles(import_graph())
    assert circles == [], "import circles (a responsibility in the wrong file): " + "; ".join(
        " <-> ".join(c) for c in circles
    )


#: DatasetMap and what sits beside it, on top of the three tl layers.
_FACADE = (
    "pairot.tl._dataset_map",
    "pairot.tl._dataset_map_answers",
    "pairot.tl._bootstrap",
    "pairot.tl._solve",
    "pairot.tl._checks",
    "pairot.tl._atlas",
)
#: The figures and the command line, on top of everything.
_FRONT = (
    "pairot.pl",
    "pairot.cli",
    "pairot._run",
    "pairot._report",
    "pairot._atlas_run",
    "pairot._atlas_report",
)
#: What each layer must not import (docs/architecture.md): a layer imports only the layers
#: above it in the data flow, never one below it.
FORBIDDEN = {
    "pairot.pp": ("pairot.tl", *_FRONT),
    "pairot.tl._ot": ("pairot.tl._cost", "pairot.tl._answers", *_FACADE, "pairot.pp", *_FRONT),
    "pairot.tl._cost": ("pairot.tl._ot", "pairot.tl._answers", *_FACADE, *_FRONT),
    "pairot.tl._answers": (*_FACADE, *_FRONT),
    "pairot.tl._dataset_map_answers": ("pairot.tl._cost", "pairot.tl._ot", "pairot.tl._solve"),
    # the atlas sits above DatasetMap and uses only its public methods (and pp)
    "pairot.tl._atlas": (
        "pairot.tl._cost",
        "pairot.tl._ot",
        "pairot.tl._answers",
        "pairot.tl._solve",
        "pairot.tl._bootstrap",
        "pairot.tl._checks",
        "pairot.tl._dataset_map_answers",
        *_FRONT,
    ),
    "pairot.tl": _FRONT,
    "pairot.pl": _FRONT[1:],
}


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _offences(graph, inside: str, forbidden) -> list[str]:
    """The imports ``module -> target`` of the modules within ``inside`` whose target is
    ``forbidden(target)``."""
    return [
        f"{module} -> {target}"
        for module, targets in sorted(graph.items())
        if _within(module, inside)
        for target in sorted(targets)
        if forbidden(target)
    ]


def test_each_layer_imports_only_the_layers_above_it():
    graph = import_graph()
    offences = []
    for layer, below in FORBIDDEN.items():
        offences += _offences(
            graph, layer, lambda t, below=below: any(_within(t, b) for b in below)
        )
    assert offences == []


def test_the_answers_use_only_the_engines_public_entry_points():
    """``tl/_answers`` reads a solution through what ``pairot.tl._ot`` exports, never through
    the engine's private modules."""
    private = lambda t: _within(t, "pairot.tl._ot") and t != "pairot.tl._ot"  # noqa: E731
    assert _offences(import_graph(), "pairot.tl._answers", private) == []
