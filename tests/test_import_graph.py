"""The package's import graph, file by file (every import, also those inside functions and under TYPE_CHECKING):
no circle, so the modules stand in layers and no import runs back up them. The three the shape pass removed:
errors -> estimator.core (errors sit below the estimator), runs/cluster -> supervisor.process and cluster ->
supervisor.health (general helpers now in launcher/process.py and launcher/health.py)."""
import ast
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "launcher"


def module_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def graph() -> dict[str, set[str]]:
    files = {module_of(p): p for p in PKG.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            for t in targets:
                while t and t not in files:
                    t = t.rsplit(".", 1)[0] if "." in t else ""
                if t and t != mod and files[t].name != "__init__.py":  # a package's face only hands names on
                    edges[mod].add(t)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def test_no_import_circle_in_the_package():
    found = cycles(graph())
    assert not found, f"modules that import each other in a loop: {found}"


def test_the_graph_is_read_right():
    """The reader itself: it sees lazy and relative imports (else the test above could not fail)."""
    g = graph()
    assert "launcher.launching.prepare" in g["launcher.launching.inprocess"]  # from .prepare import Prepared
    assert "launcher.health" in g["launcher.supervisor.run"]  # from .. import health
    assert "launcher.launching.inprocess" in g["launcher.gateway.model"]  # imported inside a method
    assert not cycles({"a": {"b"}, "b": {"a"}}) == []


def test_general_helpers_sit_below_the_supervisor():
    g = graph()
    for low in ("launcher.runs", "launcher.cluster.control", "launcher.errors"):
        assert not {m for m in g[low] if m.startswith(("launcher.supervisor.", "launcher.estimator."))}, low


def test_run_states_are_named_by_the_enum():
    """A launch's state is named through runs.RunState wherever the package compares or prints one: no string
    literal of a state outside runs.py. Ray's own words are not ours: a node shown "ALIVE" or "DEAD", an actor's
    state read from Ray's API (cluster/api.py)."""
    from launcher.runs import RunState

    states = {s.value for s in RunState}
    found = []
    for path in sorted(PKG.rglob("*.py")):
        if path.name == "runs.py" or path.relative_to(PKG).as_posix() == "cluster/api.py":
            continue
        tree = ast.parse(path.read_text())
        ray_words = {id(n.orelse) for n in ast.walk(tree) if isinstance(n, ast.IfExp)
                     and isinstance(n.body, ast.Constant) and n.body.value == "ALIVE"}
        found += [f"{path.relative_to(PKG)}:{n.lineno} {n.value!r}" for n in ast.walk(tree)
                  if isinstance(n, ast.Constant) and n.value in states and id(n) not in ray_words]
    assert not found, found
