"""The package's shape, read from its source: no import circle between modules (counting the imports
inside functions and under TYPE_CHECKING, which hide a circle rather than remove it), and data flowing
one way between the layers (data > generators > metrics > harness > cli)."""

from __future__ import annotations

import ast
from pathlib import Path

import genaug

ROOT = Path(genaug.__file__).parent

# A layer may import the ones listed for it and the shared utilities (errors, io, device, plots, ...).
LAYERS = {"data": set(), "generators": {"data"}, "classifiers": {"data"},
          "metrics": {"data", "generators", "classifiers"},
          "explain": {"data", "classifiers"},
          "harness": {"data", "generators", "classifiers", "metrics", "explain", "runs", "config"}}


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = ("genaug",) + path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the genaug modules it imports (a package's `__init__` is the package's own name)."""
    files = {module_name(p, root): p for p in root.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    graph[name] |= {full} if full in files else ({target} if target in files else set())
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in files}
        graph[name].discard(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(component)
    return found


def test_no_import_circles():
    assert circles(import_graph()) == []


def test_a_circle_is_found(tmp_path):
    """The check itself: a deferred import that closes a circle (the shape the package once had) is caught."""
    pkg = tmp_path / "genaug" / "explain"
    pkg.mkdir(parents=True)
    (tmp_path / "genaug" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "views.py").write_text("def f():\n    from .labels import g\n")
    (pkg / "labels.py").write_text("from .views import f\n")
    (pkg / "cams.py").write_text("import genaug.explain.views\n")
    graph = import_graph(tmp_path / "genaug")
    assert circles(graph) == [{"genaug.explain.views", "genaug.explain.labels"}]


def test_layers_import_only_what_comes_before_them():
    graph = import_graph()
    layer_of = lambda m: m.split(".")[1] if m.count(".") else None  # noqa: E731
    wrong = [f"{m} -> {w}" for m, targets in graph.items() for w in targets
             if layer_of(m) in LAYERS and layer_of(w) in LAYERS.keys() | {"runs", "config", "cli"}
             and layer_of(w) != layer_of(m) and layer_of(w) not in LAYERS[layer_of(m)]]
    assert wrong == []
