"""No import cycle among toothseg's modules, counting imports inside functions too.

A cycle hidden in a function-level import works until someone moves the import to the top (or a
new entry point imports the modules in another order); the package layout should need none. The
graph is read from the source with :mod:`ast`, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "ToothSegTraining"


def module_files(root: Path, package: str = "toothseg") -> dict[str, Path]:
    """``{dotted module name: file}``; a package is named by its ``__init__.py``."""
    files = {}
    for path in (root / package).rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def _targets(module: str, node: ast.Import | ast.ImportFrom, is_package: bool, known: set[str]) -> list[str]:
    """The known modules an import statement loads (the deepest one each name resolves to)."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            parts = module.split(".") if is_package else module.split(".")[:-1]
            parts = parts[: len(parts) - (node.level - 1)]
            base = ".".join(parts + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    own_packages = _ancestors(module)
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            # importing a.b.c runs a/b/__init__.py first: an edge to each package above the target,
            # except those above the importing module (already being imported when it runs)
            found += [p for p in [*_ancestors(name), name] if p in known and p not in own_packages and p != module]
    return found


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(files: dict[str, Path]) -> dict[str, set[str]]:
    known = set(files)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # every import, at the top or in a function
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[name].update(_targets(name, node, path.name == "__init__.py", known))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for succ in successors:
                if succ not in index:
                    index[succ] = low[succ] = counter
                    counter += 1
                    stack.append(succ)
                    on_stack.add(succ)
                    work.append((succ, iter(sorted(graph[succ]))))
                    break
                if succ in on_stack:
                    low[node] = min(low[node], index[succ])
            else:
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


def test_the_checker_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .b import thing\n")
    (package / "b.py").write_text("def thing():\n    from . import a\n    return a\n")
    (package / "c.py").write_text("from pkg.a import thing\n")
    graph = import_graph(module_files(tmp_path, "pkg"))
    assert graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_checker_counts_the_package_init_a_submodule_import_runs(tmp_path):
    """``from .sub.schema import X`` runs ``sub/__init__.py`` first: a cycle through it is one."""
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("from .loader import load\n")
    (tmp_path / "pkg" / "sub" / "schema.py").write_text("X = 1\n")
    (tmp_path / "pkg" / "sub" / "loader.py").write_text("from ..data import y\n\ndef load():\n    return y\n")
    (tmp_path / "pkg" / "data.py").write_text("from .sub.schema import X\ny = X\n")
    graph = import_graph(module_files(tmp_path, "pkg"))
    assert "pkg.sub" in graph["pkg.data"]
    assert cycles(graph) == [["pkg.data", "pkg.sub", "pkg.sub.loader"]]


def test_toothseg_has_no_import_cycle():
    files = module_files(PACKAGE_ROOT)
    assert len(files) > 80 and "toothseg.train.config.loader" in files
    assert cycles(import_graph(files)) == []
