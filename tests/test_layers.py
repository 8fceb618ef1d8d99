"""The import graph points one way: app → servers (server, http_api) → domain (recharge) → core_ext;
and every module is small enough to read whole.

Read from the source with ``ast`` (imports inside functions count too), so a lazy import
cannot hide a cycle or a layer pointing up. The sizes (issue 13: no module over 600 lines, no
function over 70 lines outside tests and benches) hold for the compiled core's Cython sources
(.pyx/.pxd) as for Python; Cython is read by its indentation, which is all a size needs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "server", "http_api", "recharge", "core_ext", "loadtest", "chaos")
# Every folder of source code; tests and benches are held to the module size, not the function size.
SOURCE_DIRS = (*PACKAGES, "cluster", "scripts", "bench", "tests")
NO_FUNCTION_LIMIT = ("bench", "tests")
SOURCE_SUFFIXES = (".py", ".pyx", ".pxd", ".pyi")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 70
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


def source_files() -> list[Path]:
    """Every Python and Cython source of the project, setup.py included."""
    found = [ROOT / "setup.py"]
    for folder in SOURCE_DIRS:
        found += [p for p in (ROOT / folder).rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()]
    return sorted(found)


# A Cython function: ``def`` / ``cdef`` / ``cpdef`` with a parenthesis before any ``=`` (a ``cdef`` line with
# ``=`` first declares a variable); ``cdef class`` / ``extern`` / ``enum`` / ``struct`` open no function.
_CYTHON_DEF = re.compile(r"^(\s*)(?:async\s+def|def|cpdef|cdef)\s+(?!class\b|extern\b|enum\b|struct\b|union\b)"
                         r"[^=(]*\(")


def cython_functions(text: str) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of each function of a Cython source, its end read from the indentation."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        match = _CYTHON_DEF.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        end = i
        for j in range(i + 1, len(lines)):
            if lines[j].strip() and len(lines[j]) - len(lines[j].lstrip()) <= indent:
                break
            if lines[j].strip():
                end = j
        name = line[: line.index("(")].split()[-1].lstrip("*")
        found.append((name, i + 1, end - i + 1))
    return found


def functions_of(path: Path) -> list[tuple[str, int, int]]:
    """(name, first line, lines) of every function and method in a source file."""
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".pyx", ".pxd"):
        return cython_functions(text)
    return [
        (node.name, node.lineno, (node.end_lineno or node.lineno) - node.lineno + 1)
        for node in ast.walk(ast.parse(text))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    ]


def test_no_module_over_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in source_files()
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert long == {}


def test_no_function_over_70_lines_outside_tests_and_benches() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{first} {name} ({n} lines)"
        for path in source_files()
        if path.relative_to(ROOT).parts[0] not in NO_FUNCTION_LIMIT
        for name, first, n in functions_of(path)
        if n > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_every_cython_module_opens_with_a_docstring() -> None:
    """A .pyx opens (after its ``# cython:`` directives) with the docstring saying its one job."""
    missing = []
    for path in sorted((ROOT / "core_ext").glob("*.pyx")):
        code = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]
        if not code or not code[0].startswith('"""'):
            missing.append(path.name)
    assert missing == []


def test_the_size_checks_see_cython() -> None:
    """The checks themselves: a Cython function's length is read whole, a variable is no function."""
    source = (
        "cdef int x = f(1)\n"
        "cdef inline uint32_t _crc(const unsigned char *p,\n"
        "                          Py_ssize_t n) noexcept nogil:\n"
        "    if n:\n"
        "\n"
        "        return 1\n"
        "    return 0\n"
        "\n"
        "\n"
        "cdef class Frame:\n"
        "    def __init__(self, *, int stage):\n"
        "        self.stage = stage\n"
    )
    assert cython_functions(source) == [("_crc", 2, 6), ("__init__", 11, 2)]
    assert ROOT / "core_ext" / "_frame.pyx" in source_files()


def test_no_import_by_string() -> None:
    """Every import is a statement the graph above can read: no importlib, no ``__import__``."""
    by_string = [
        f"{name}:{node.lineno}"
        for name, path in modules().items()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if (isinstance(node, ast.Import | ast.ImportFrom)
            and any(alias.name.split(".")[0] == "importlib" for alias in node.names)
            or (isinstance(node, ast.ImportFrom) and (node.module or "").startswith("importlib")))
        or (isinstance(node, ast.Name) and node.id == "__import__")
    ]
    assert by_string == []
