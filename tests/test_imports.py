"""The package's modules import each other without a cycle.

Every ``import`` / ``from ... import`` statement of every module under ``ptycho_exp`` is read with ``ast`` (also
those inside functions and ``if TYPE_CHECKING:`` blocks, which hide a cycle rather than remove it), the edges
between ``ptycho_exp`` modules form a graph, and the graph must have no cycle.
"""
from __future__ import annotations

import ast
import pkgutil
from pathlib import Path

import ptycho_exp

PACKAGE = "ptycho_exp"


def package_modules() -> dict[str, Path]:
    """``{module name: source file}`` for the package and every module below it."""
    root = Path(ptycho_exp.__file__).parent
    mods = {PACKAGE: root / "__init__.py"}
    for info in pkgutil.walk_packages([str(root)], prefix=PACKAGE + "."):
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else (root / rel).with_suffix(".py")
        mods[info.name] = path
    return mods


def _resolve(module: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    """The absolute module a (possibly relative) ``from ... import`` names."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its source (``from a import b`` counts ``a.b`` when
    that is a module, else ``a``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, is_pkg, node)
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in known else target for a in node.names]
        else:
            continue
        for name in names:
            # the deepest package module the name refers to (``import a.b.c`` imports a.b.c)
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name != module and name.startswith(PACKAGE):
                out.add(name)
    return out


def import_graph() -> dict[str, set[str]]:
    mods = package_modules()
    known = set(mods)
    return {m: imported_modules(m, p, known) for m, p in mods.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle (``[a, b, ..., a]``) of ``graph``, or None. A package importing its own submodules (a
    lazy ``__init__``) is not an edge back from the submodule, so ``__init__`` edges to children are skipped."""
    white, grey, black = 0, 1, 2
    colour = {m: white for m in graph}
    stack: list[str] = []

    def edges(m: str) -> list[str]:
        return sorted(d for d in graph[m] if not d.startswith(m + "."))

    def visit(m: str) -> list[str] | None:
        colour[m] = grey
        stack.append(m)
        for d in edges(m):
            if colour.get(d) == grey:
                return stack[stack.index(d):] + [d]
            if colour.get(d) == white:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        colour[m] = black
        return None

    for m in sorted(graph):
        if colour[m] == white:
            found = visit(m)
            if found:
                return found
    return None


def test_the_walk_sees_the_package():
    graph = import_graph()
    assert "ptycho_exp.run" in graph and "ptycho_exp.analysis.findings" in graph
    assert "ptycho_exp.analysis.collect" in graph["ptycho_exp.analysis.tables"]
    # function-level imports count: the aggregate entry imports the report page inside a function
    assert "ptycho_exp.report.page" in graph["ptycho_exp.aggregate"]


def test_find_cycle_reports_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_among_package_modules():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
