"""The layout's rules, checked on the source (ast, nothing imported): fast, and a newcomer's map.

* no import cycles between modules of archiver/ and query/, counting every
  import: inside functions and under ``TYPE_CHECKING`` too (a package counts
  as its ``__init__``; ``from package import module`` as that module);
* archiver/ imports query/ only in its CLI wiring (archiver/cli/); query/
  imports of archiver only the archive format, storage and the cross-cutting
  top-level modules;
* no module over :data:`MAX_LINES` lines;
* package ``__init__`` files hold a docstring and no imports (importing a
  package must never pull pyarrow or aiobotocore in);
* every exception class is defined in archiver/errors.py, derives from
  ``ArchiverError`` and is drawn in its docstring (private ``_`` classes that
  never leave their module excepted).

Run ``python tests/test_layout_rules.py`` for the import graph's report.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("archiver", "query")
MAX_LINES = 300
#: What query/ may import of archiver/: the archive format (with the Delta table's read-only log reader,
#: archiver.table.log*: never the delta-rs writer), storage, and the cross-cutting modules.
QUERY_MAY_IMPORT = (
    "archiver.archive", "archiver.table.log", "archiver.storage", "archiver.config", "archiver.environment",
)  # fmt: skip
QUERY_MAY_IMPORT_TOP = (
    "archiver.errors", "archiver.units", "archiver.timespec", "archiver.redact", "archiver.terminal",
)  # fmt: skip


def module_files() -> dict[str, Path]:
    """Every module of the packages, by dotted name (a package by its own name)."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[str, list[str]]]:
    """(module imported from, names imported) for every import statement anywhere in the tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            yield base, [alias.name for alias in node.names]


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (a name that is a submodule counts as that module)."""
    files = module_files()
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), str(path))
        edges = graph.setdefault(module, set())
        for base, names in _imported_names(tree, module, path.name == "__init__.py"):
            targets = [f"{base}.{name}" for name in names if f"{base}.{name}" in files]
            if len(targets) < len(names) and base in files:
                targets.append(base)  # a name defined in the module itself
            if not names and base in files:
                targets.append(base)
            edges.update(t for t in targets if t != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.append(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def test_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"f"}, "f": {"e"}}
    assert cycles(graph) == [["a", "b", "c"], ["e", "f"]]


def test_archiver_imports_query_only_in_the_cli() -> None:
    wrong = {
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if module.startswith("archiver")
        and target.split(".")[0] == "query"
        and not module.startswith("archiver.cli.")
    }
    assert wrong == set()


def test_query_imports_only_the_format_storage_and_cross_cutting_modules() -> None:
    wrong = {
        (module, target)
        for module, targets in import_graph().items()
        for target in targets
        if module.split(".")[0] == "query"
        and target.split(".")[0] == "archiver"
        and not target.startswith(tuple(f"{p}." for p in QUERY_MAY_IMPORT) + QUERY_MAY_IMPORT)
        and target not in QUERY_MAY_IMPORT_TOP
    }
    assert wrong == set()


def test_no_module_over_the_line_limit() -> None:
    long = {
        module: lines
        for module, path in module_files().items()
        if (lines := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}


def test_package_init_files_hold_no_imports() -> None:
    for module, path in module_files().items():
        if path.name != "__init__.py":
            continue
        tree = ast.parse(path.read_text())
        assert ast.get_docstring(tree), f"{module} has no docstring"
        imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert imports == [], f"{module} imports: package __init__ files hold only a docstring"


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def test_every_exception_class_is_in_the_one_tree() -> None:
    errors_path = ROOT / "archiver" / "errors.py"
    tree = ast.parse(errors_path.read_text())
    drawing = ast.get_docstring(tree) or ""
    in_tree = {"ArchiverError"}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name != "ArchiverError":
            assert set(_base_names(node)) & in_tree, f"{node.name} does not derive from ArchiverError"
            in_tree.add(node.name)
            assert f" {node.name} " in drawing or f"── {node.name}" in drawing, f"{node.name} is not drawn"
    outside = []
    for module, path in module_files().items():
        if path == errors_path:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.ClassDef)
                and not node.name.startswith("_")
                and any(b.endswith(("Error", "Exception")) or b in in_tree for b in _base_names(node))
            ):
                outside.append(f"{module}.{node.name}")
    assert outside == [], "exception classes belong in archiver/errors.py"


if __name__ == "__main__":
    graph = import_graph()
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} imports between them")
    for component in cycles(graph):
        print("cycle:", " <-> ".join(component))
