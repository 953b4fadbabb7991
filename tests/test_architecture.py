"""The import graph is what docs/ARCHITECTURE.md says it is: no cycle, layers one way.

The layers are read from the document's ```layers block, top to bottom: a
package may import its own modules and any package on a lower line, never one
on its own line or above. Imports under ``if TYPE_CHECKING:`` are not edges
(they never run); imports inside functions are (they run, only later).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "datamove"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(inner) for inner in ast.walk(node))
    return skipped


def import_graph() -> dict[str, set[str]]:
    """module → the datamove modules it imports (``from pkg import submodule`` → submodule)."""
    known = modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in known.items():
        tree = ast.parse(path.read_text())
        skipped = _type_checking_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{name}: relative import (the project uses absolute ones)"
                module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module
                           for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            graph[name].update(t for t in targets if t in known and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
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
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def documented_layers() -> list[list[str]]:
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    block = text.split("```layers\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].split() for line in block.splitlines()
            if line.split("#", 1)[0].strip()]


def package_of(module: str) -> str:
    """`datamove.stores.core` → `stores`; top-level modules are their own package."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "datamove"


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def test_every_package_is_in_exactly_one_documented_layer() -> None:
    layers = documented_layers()
    listed = [name for layer in layers for name in layer]
    assert len(listed) == len(set(listed)), f"listed twice: {listed}"
    actual = {package_of(module) for module in modules()}
    assert actual == set(listed), (f"undocumented: {sorted(actual - set(listed))}, "
                                   f"documented but absent: {sorted(set(listed) - actual)}")


def test_imports_only_go_down_the_documented_layers() -> None:
    depth = {name: i for i, layer in enumerate(documented_layers()) for name in layer}
    wrong = sorted(f"{module} imports {target}"
                   for module, targets in import_graph().items() for target in targets
                   if package_of(module) != package_of(target)
                   and depth[package_of(target)] <= depth[package_of(module)])
    assert wrong == []


def test_the_checker_sees_a_cycle_and_an_upward_import() -> None:
    """The checks above can fail: a made-up graph with both faults is caught."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
