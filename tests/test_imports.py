"""The package's import graph: no cycle (counting imports inside functions too: a cycle hidden in a function is still
two modules that each need the other), no entry point imported as a library, and every module imports alone."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pgd"
# `pgd <command>` modules: only pgd/cli.py may import them
ENTRY_POINTS = {"pgd.train", "pgd.eval"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The pgd modules ``name`` imports anywhere in its file (``from pgd.x import y`` counts pgd.x.y if a module)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base in known:
                out.add(base)
            out |= {f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in known}
    # a package's own submodules are its children, not dependencies of it in the cycle sense
    return {m for m in out if m != name and not (path.name == "__init__.py" and m.startswith(name + "."))}


def test_no_import_cycle():
    mods = modules()
    graph = {n: imports_of(n, p, set(mods)) for n, p in mods.items()}
    # a module importing pkg.sub also runs pkg/__init__: an edge to the package unless it is its own ancestor
    for n in list(graph):
        graph[n] |= {m.rsplit(".", 1)[0] for m in graph[n] if "." in m[4:] and not n.startswith(m.rsplit(".", 1)[0])}
        graph[n].discard(n)
    state: dict[str, int] = {}
    cycles = []

    def visit(n, stack):
        state[n] = 1
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack + [m])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


def test_entry_points_are_not_libraries():
    mods = modules()
    users = {n: sorted(imports_of(n, p, set(mods)) & ENTRY_POINTS) for n, p in mods.items() if n != "pgd.cli"}
    assert not {n: u for n, u in users.items() if u}


@pytest.mark.slow   # one interpreter per module (~5 s each: torch, mmdet)
@pytest.mark.parametrize("name", sorted(modules()))
def test_module_imports_alone(name):
    p = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
