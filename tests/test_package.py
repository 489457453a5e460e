"""The package's shape: no import circles (function-level imports included), no module reaching into another's
private names, and every ART estimator built in one module (octlib.estimators)."""

import ast
from pathlib import Path

import pytest

import octlib

ROOT = Path(octlib.__file__).parent


def import_graph(root: Path) -> dict:
    """``{module: {octlib modules it imports}}`` from the source, every ``import`` statement included (those inside
    functions too: a circle through a function-level import is still a circle)."""
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.add(full if full in modules else base)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        graph[name] = {t for t in targets if t in modules and t != name and not name.startswith(t + ".")}
    return graph


def circles(graph: dict) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                found.append(sorted(part))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_octlib_imports_have_no_circle():
    graph = import_graph(ROOT)
    assert len(graph) > 20 and "octlib.estimators" in graph["octlib.attacks"]
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import x\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")  # a function-level import counts
    (pkg / "c.py").write_text("from pkg.a import y\n")
    assert circles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in ROOT.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level:
                offenders += [f"{path.relative_to(ROOT)}: {a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.endswith("__") and not a.asname]
    assert offenders == []


@pytest.mark.parametrize("module", sorted(p.stem for p in ROOT.glob("*.py") if p.stem != "estimators"))
def test_art_estimators_are_built_only_in_octlib_estimators(module):
    """Nothing outside octlib.estimators subclasses or instantiates an ART estimator class."""
    text = (ROOT / f"{module}.py").read_text(encoding="utf-8")
    for name in ("TensorFlowV2Classifier", "TensorFlowV2RandomizedSmoothing", "fast_classifier_class()"):
        assert name not in text.replace(f"``{name}``", "").replace(f"`{name}`", ""), (module, name)
