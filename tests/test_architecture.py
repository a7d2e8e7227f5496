"""The package's shape, read from its source: no import circle between modules (counting the imports
inside functions and under TYPE_CHECKING, which hide a circle rather than remove it), and data flowing
one way between the layers (data > generators > metrics > harness > cli)."""

from __future__ import annotations

import ast
import graphlib
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


def circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle ([a, b, ..., a]) if there is any (the standard library's topological sort)."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as e:
        return e.args[1]
    return None


def test_no_import_circles():
    assert circle(import_graph()) is None


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
    found = circle(graph)
    assert found is not None and found[0] == found[-1]
    assert set(found) == {"genaug.explain.views", "genaug.explain.labels"}


def layer_of(module: str) -> str | None:
    return module.split(".")[1] if module.count(".") else None


def test_layers_import_only_what_comes_before_them():
    graph = import_graph()
    wrong = [f"{m} -> {w}" for m, targets in graph.items() for w in targets
             if layer_of(m) in LAYERS and layer_of(w) in LAYERS.keys() | {"runs", "config", "cli"}
             and layer_of(w) != layer_of(m) and layer_of(w) not in LAYERS[layer_of(m)]]
    assert wrong == []


HARNESS = ("design", "stats", "stages", "run", "report", "experiment")  # the order data flows through the harness


def test_the_harness_parts_import_only_what_comes_before_them():
    """design < stats < stages < run < report < experiment.py, each part a sub-package whose
    docstring says what it holds (harness/__init__.py names the order)."""
    import importlib

    def part(module: str) -> str | None:
        bits = module.split(".")
        return bits[2] if len(bits) > 2 and bits[1] == "harness" else None

    graph = import_graph()
    wrong = [f"{m} -> {t}" for m, targets in graph.items() for t in targets
             if part(m) in HARNESS and part(t) in HARNESS and HARNESS.index(part(t)) > HARNESS.index(part(m))]
    assert wrong == []
    assert {part(m) for m in graph if part(m)} == set(HARNESS)  # nothing beside the parts
    for name in HARNESS[:-1]:
        doc = importlib.import_module(f"genaug.harness.{name}").__doc__
        assert doc and len(doc) > 80, name


def test_only_the_label_kind_branches_on_the_label_kind():
    """One pipeline for one class and for several labels per image: outside stages/label_kinds.py (and
    the multi-label stage and report modules the kind calls) no harness module tests `multilabel`."""
    allowed = {"label_kinds.py", "multilabel_stages.py", "multilabel_report.py"}
    found = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.If, ast.IfExp, ast.While)) or isinstance(node, ast.comprehension):
                tests = [node.test] if not isinstance(node, ast.comprehension) else node.ifs
                for test in tests:
                    if any((isinstance(n, ast.Attribute) and n.attr == "multilabel")
                           or (isinstance(n, ast.Name) and n.id == "multilabel") for n in ast.walk(test)):
                        found.append(f"{path.relative_to(ROOT)}:{node.lineno if hasattr(node, 'lineno') else test.lineno}")
    assert found == []
