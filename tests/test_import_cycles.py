"""No import cycles between edgeml's modules: layers import downwards only, so a backend or a reader can be
added, moved or imported alone. Every import counts, those inside functions too: a lazy import hides a cycle
from Python, not from the design."""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

import edgeml

PACKAGE = Path(edgeml.__file__).parent


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the package folder ``root`` (a package by its name)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (root.name, *path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def import_graph(root: Path) -> dict[str, dict[str, int]]:
    """module -> {module of the package it imports: line of the first such import}, relative imports resolved.

    ``from X import n`` depends on the submodule ``X.n`` when there is one, else on ``X``."""
    modules = module_files(root)
    graph: dict[str, dict[str, int]] = {name: {} for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                    origin = ".".join(base + ([node.module] if node.module else []))
                else:
                    origin = node.module or ""
                targets = [f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in modules else origin
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target in modules and target != name:
                    graph[name].setdefault(target, node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def one_cycle(graph: dict[str, dict[str, int]], component: list[str], files: dict[str, Path], root: Path) -> str:
    """The shortest import loop through the component's first module, each step with its file and line."""
    start, members = component[0], set(component)
    previous = {start: None}
    queue = deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while previous[path[-1]] is not None:
                    path.append(previous[path[-1]])
                path.reverse()
                loop = path + [start]
                return " -> ".join(f"{a} ({files[a].relative_to(root.parent).as_posix()}:{graph[a][b]})"
                                   for a, b in zip(loop, loop[1:])) + f" -> {start}"
            if w in members and w not in previous:
                previous[w] = v
                queue.append(w)
    raise AssertionError(f"no loop through {start}")  # a component of 2+ modules always has one


def describe(root: Path) -> list[str]:
    graph, files = import_graph(root), module_files(root)
    return [f"{len(c)} modules import each other ({', '.join(c)}): {one_cycle(graph, c, files, root)}" for c in cycles(graph)]


def test_edgeml_has_no_import_cycles():
    problems = describe(PACKAGE)
    assert not problems, "import cycles; move what both sides need to a module below them:\n" + "\n".join(problems)


def test_a_lazy_relative_import_is_a_cycle_too(tmp_path):
    """The scanner itself: a cycle made of a function-level relative import and a submodule import is found."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "a.py").write_text("from .sub import b\n")
    (root / "sub" / "b.py").write_text("def f():\n    from .. import c\n")
    (root / "c.py").write_text("import pkg.a\n")
    (root / "d.py").write_text("from .a import b\nfrom . import c\n")  # depends on the cycle, is not in it
    problems = describe(root)
    assert len(problems) == 1 and problems[0].startswith("3 modules import each other (pkg.a, pkg.c, pkg.sub.b)")
    assert "pkg.a (pkg/a.py:1) -> pkg.sub.b (pkg/sub/b.py:2) -> pkg.c (pkg/c.py:1) -> pkg.a" in problems[0]


def test_no_public_name_is_a_submodule_that_an_import_would_put_in_its_place():
    """``edgeml.verify`` was a function and a module: once any code imported the module, the package
    attribute became the module and ``edgeml.verify(folder)`` raised TypeError."""
    import edgeml

    clashes = [name for name in edgeml._API if (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()]
    assert clashes == []
