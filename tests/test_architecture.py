"""The project's import graph, built from the source with ast: no circle anywhere, and nothing imports upwards.

Layers: common (0) < nas, pc (1) < faces (2); nas and pc never import each other. An edge is an import statement
(top level or inside a function) or a string naming a project module in a module that calls
`importlib.import_module` (a lazy dispatch table is an import too)."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("common", "nas", "pc", "faces")
LAYER = {"common": 0, "nas": 1, "pc": 1, "faces": 2}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = path
    return out


def edges(mods: dict[str, Path]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        dynamic = any(isinstance(n, ast.Attribute) and n.attr == "import_module" for n in ast.walk(tree))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif dynamic and isinstance(node, ast.Constant) and isinstance(node.value, str):
                targets = [node.value]
            graph[name] |= {t for t in targets if t in mods and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_no_import_circle_anywhere() -> None:
    graph = edges(modules())
    assert sum(len(v) for v in graph.values()) > 100  # the graph is really built
    assert cycles(graph) == []


def test_no_upward_or_sideways_import() -> None:
    bad = []
    for a, targets in edges(modules()).items():
        for b in targets:
            pa, pb = a.split(".")[0], b.split(".")[0]
            if LAYER[pb] > LAYER[pa] or (LAYER[pa] == LAYER[pb] == 1 and pa != pb):
                bad.append(f"{a} -> {b}")
    assert bad == []


def test_the_checker_sees_circles() -> None:
    graph = {"common.a": {"common.b"}, "common.b": {"common.c"}, "common.c": {"common.a"}, "nas.x": set()}
    assert cycles(graph) == [["common.a", "common.b", "common.c"]]
    assert cycles({"common.a": {"common.b"}, "common.b": set()}) == []


def test_file_formats_are_named_in_one_place() -> None:
    """A `name/N` schema string appears only in common/formats.py; every format there has a user."""
    import re

    from common import formats

    literal = re.compile(r"^[a-z_]+/\d+$")
    used: set[str] = set()
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        if name != "common.formats":
            assert not {s for s in strings if literal.match(s)}, f"{name}: a schema name outside common/formats.py"
        used |= {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)
                 and isinstance(n.value, ast.Name) and n.value.id == "formats"}
    registered = {f.name for f in formats.FORMATS}
    constants = {k for k, v in vars(formats).items() if k.isupper() and isinstance(v, str)}
    assert registered == {getattr(formats, k) for k in constants}  # every constant is described in FORMATS
    assert constants <= used, f"formats nobody writes: {sorted(constants - used)}"


def test_every_module_imports() -> None:
    """A name moved to another module is found by importing everything (ruff cannot see inside modules); in a
    child process, so nothing imported here leaks into the other tests."""
    import subprocess
    import sys

    names = sorted(n for n, p in modules().items() if p.name != "__main__.py")
    code = "import importlib, sys\nfor n in sys.argv[1:]:\n    importlib.import_module(n)\n"
    proc = subprocess.run([sys.executable, "-c", code, *names], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
