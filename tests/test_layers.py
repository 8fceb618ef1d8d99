"""The import graph points one way: app → servers (server, http_api) → domain (recharge) → core_ext.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import
cannot hide a cycle or a layer pointing up.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "server", "http_api", "recharge", "core_ext", "loadtest", "chaos")
# What each package may import (besides itself and third-party code).
ALLOWED: dict[str, set[str]] = {
    "core_ext": set(),
    "recharge": {"core_ext"},
    "server": {"recharge", "core_ext"},
    "http_api": {"recharge", "core_ext"},
    "app": {"server", "http_api", "recharge", "core_ext"},
    "loadtest": {"app", "server", "http_api", "recharge", "core_ext"},
    "chaos": {"app", "server", "http_api", "recharge", "core_ext"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports (``from a import b`` counts a.b when b is a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".") if is_package else name.split(".")[:-1]
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports_of(name, path, known) for name, path in known.items()}


def test_no_package_imports_a_layer_above_it() -> None:
    wrong = [
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if (src := source.split(".")[0]) != (dst := target.split(".")[0]) and dst not in ALLOWED[src]
    ]
    assert wrong == []


def test_the_import_graph_has_no_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt):], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert cycles == []


def test_every_module_opens_with_a_docstring() -> None:
    missing = [
        name
        for name, path in modules().items()
        if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    ]
    assert missing == []


def test_the_graph_reader_sees_lazy_imports() -> None:
    """The check itself: a function-level import of a module is an edge."""
    edges = graph()
    assert "app.dd_cli" in edges["app.cli"]
