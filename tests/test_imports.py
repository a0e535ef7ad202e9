"""The package's module graph, read from the source (ast): no module imports another that imports it back,
directly or through others, even inside a function; and outside the CLI (whose commands import what they
need, to start fast) no module imports a kneeage module inside a function."""

import ast
from pathlib import Path

import kneeage

PACKAGE = Path(kneeage.__file__).parent


def _imports():
    """module → [(imported kneeage module, inside a function?)] for every module of the package."""
    graph = {}
    for path in sorted(PACKAGE.glob("*.py")):
        name = "kneeage" if path.stem == "__init__" else f"kneeage.{path.stem}"
        tree = ast.parse(path.read_text(), str(path))
        inner = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for n in ast.walk(f)}
        found = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = "kneeage" if node.level == 1 else (node.module or "") if node.level == 0 else None
                if node.level == 1 and node.module:
                    base = f"kneeage.{node.module}"
                if base is None or not (base == "kneeage" or base.startswith("kneeage.")):
                    continue
                targets = [base]
                if base == "kneeage":  # `from . import stats`: submodules; `from . import __version__`: the package
                    targets = [f"kneeage.{a.name}" if (PACKAGE / f"{a.name}.py").exists() else "kneeage" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name == "kneeage" or a.name.startswith("kneeage.")]
            else:
                continue
            found += [(t, id(node) in inner) for t in targets if t != name]
        graph[name] = found
    return graph


def _cycle(graph):
    """One import cycle (a list of modules, first = last), or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for t, _ in graph.get(m, []):
            if state.get(t) == "open":
                return stack[stack.index(t):] + [t]
            if t not in state and (c := visit(t)):
                return c
        state[m] = "done"
        stack.pop()
        return None

    for m in graph:
        if m not in state and (c := visit(m)):
            return c
    return None


def test_every_module_is_read():
    graph = _imports()
    assert {"kneeage", "kneeage.cli", "kneeage.validation", "kneeage.predict", "kneeage.train"} <= set(graph)
    assert ("kneeage.stats", False) in graph["kneeage.validation"]  # `from . import stats` counts


def test_no_import_cycles():
    cycle = _cycle(_imports())
    assert cycle is None, "import cycle: " + " → ".join(cycle)


def test_cycle_finder_finds_one():
    assert _cycle({"a": [("b", False)], "b": [("c", True)], "c": [("a", False)]}) == ["a", "b", "c", "a"]
    assert _cycle({"a": [("b", False)], "b": []}) is None


def test_only_the_cli_imports_kneeage_modules_inside_functions():
    inside = {m: sorted({t for t, f in ts if f}) for m, ts in _imports().items() if m != "kneeage.cli"}
    assert {m: ts for m, ts in inside.items() if ts} == {}
