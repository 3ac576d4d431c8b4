"""The arrows between packages point one way, and no module depends on itself.

``services`` is the core; ``ingest`` (Celery), ``ui`` (Streamlit) and ``cli`` (Typer and the
local stack) are adapters over it. Every import counts, also one inside a function: a cycle held
apart by a function-local import is still a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "ingest", "ui", "cli")
# What each package may import of the others.
ALLOWED: dict[str, set[str]] = {
    "services": set(),
    "ingest": {"services"},
    "ui": {"services"},
    "cli": {"services", "ingest", "ui"},
}


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES = _modules()


def _imports(name: str, path: Path) -> Iterator[tuple[str, int]]:
    """(imported module, line) for every import of our packages in ``path``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from pkg import mod` imports the module pkg.mod when there is one.
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        else:
            continue
        for target in targets:
            if target.split(".")[0] in PACKAGES:
                yield _known(target), node.lineno


def _known(target: str) -> str:
    """The module of ours that ``target`` names (a package, a module, or a name in one)."""
    while target not in MODULES and "." in target:
        target = target.rpartition(".")[0]
    return target


def _graph() -> dict[str, set[str]]:
    return {
        name: {target for target, _ in _imports(name, path) if target != name}
        for name, path in MODULES.items()
    }


def test_the_packages_exist_and_are_found() -> None:
    for package in PACKAGES:
        assert package in MODULES, f"no package {package}/"
    assert len(MODULES) > 40


@pytest.mark.parametrize("package", PACKAGES)
def test_arrows_point_one_way(package: str) -> None:
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target}"
        for name, path in MODULES.items()
        if name.split(".")[0] == package
        for target, line in _imports(name, path)
        if target.split(".")[0] not in {package, *ALLOWED[package]}
    ]
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package])}:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = [scc for scc in _strongly_connected(graph) if len(scc) > 1]
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(sorted(c)) for c in cycles)


def test_a_known_cycle_would_be_found() -> None:
    # The check itself can fail: a cycle planted in a copy of the graph is reported.
    graph = _graph()
    graph["services.schema"] = graph["services.schema"] | {"services.store"}
    assert any("services.schema" in scc and len(scc) > 1 for scc in _strongly_connected(graph))


def _strongly_connected(graph: dict[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iteratively."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[set[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
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
                components.append(component)
    return components
