"""The house rules that keep the layout readable: the product never imports the research code, and
no two modules import each other (directly or round a longer circle, at the top or inside a function)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(package: str) -> dict[str, Path]:
    return {module_name(path): path for path in sorted((ROOT / package).rglob("*.py"))}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, anywhere in it: `from a.b import c` counts as a.b.c when that is a module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    return found


def graph(package: str) -> dict[str, set[str]]:
    found = modules(package)
    return {name: imports(name, path, set(found)) & set(found) - {name} for name, path in found.items()}


def test_the_product_never_imports_the_research_code():
    edges = graph("pipeline")
    crossing = sorted(f"{a} -> {b}" for a, targets in edges.items() if not a.startswith("pipeline.research")
                      for b in targets if b.startswith("pipeline.research"))
    assert crossing == []


def test_no_module_imports_a_module_that_imports_it_back():
    edges = graph("pipeline")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles = []

    def visit(name: str, path: list[str]) -> None:  # path: from the start to name
        state[name] = 1
        for target in sorted(edges[name]):
            if state.get(target) == 1:
                circles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name, [name])
    assert circles == []


def test_no_test_module_imports_another():
    """Shared test code lives in helper modules (tests/corpora.py, tests/tiny_models.py, tests/hostile.py, ...)."""
    found = modules("tests")
    tests = {name for name in found if name.rsplit(".", 1)[-1].startswith(("test_", "conftest"))}
    crossing = sorted(f"{a} -> {b}" for a, path in found.items() for b in imports(a, path, set(found)) & tests)
    assert crossing == []
