"""The package's shape: one top-level package, layers that import one way, no import cycles.

Layers: vmem.app -> vmem.kernel -> vmem (the memory layer) -> the C core. Every import
statement counts, at module level or inside a function; only ``if TYPE_CHECKING:`` blocks
(never executed) are left out.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"vmem": ROOT / "vmem", "vmem.kernel": ROOT / "kernel", "vmem.app": ROOT / "app"}


def _modules() -> dict[str, Path]:
    out = {}
    for prefix, folder in PACKAGES.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The project modules ``module`` imports (resolved to the longest known module name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    out = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            out.add(name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {m: _imports(m, p, known) for m, p in mods.items()}


def test_the_distribution_is_one_package_named_vmem(tmp_path: Path) -> None:
    """Outside the checkout (whose folders are on sys.path when pytest runs from it): the
    installed distribution offers vmem, vmem.kernel and vmem.app, and nothing called kernel."""
    code = ("import importlib.util, json; from vmem.kernel import Agent, Memory; import vmem.app.cli; "
            "print(json.dumps([importlib.util.find_spec(n) is not None for n in ('kernel', 'app')]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [False, False], out.stdout


def test_layers_import_one_way() -> None:
    for module, deps in _graph().items():
        layer = "app" if module.startswith("vmem.app") else "kernel" if module.startswith("vmem.kernel") else "vmem"
        for dep in deps:
            if layer == "vmem":
                assert not dep.startswith(("vmem.kernel", "vmem.app")), f"{module} (memory layer) imports {dep}"
            if layer == "kernel":
                assert not dep.startswith("vmem.app"), f"{module} (kernel) imports the application: {dep}"


def test_no_import_cycles() -> None:
    graph = _graph()
    # a package's __init__ re-exporting its submodules is not a cycle in what runs first
    edges = {m: {d for d in deps if not m.startswith(d + ".")} for m, deps in graph.items()}
    done: set[str] = set()
    cycles: list[list[str]] = []

    def walk(node: str, path: list[str]) -> None:
        if node in path:
            cycles.append(path[path.index(node):] + [node])
            return
        if node in done:
            return
        for dep in sorted(edges.get(node, ())):
            walk(dep, path + [node])
        done.add(node)

    for module in sorted(edges):
        walk(module, [])
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles[:5])


#: A module longer than this is more than one concept: split it (tests are exempt).
MAX_LINES = 900


def test_no_source_file_is_over_the_line_limit() -> None:
    """Every Python file outside tests/ (the package's folders, bench/, examples/, setup.py)."""
    sources = [p for p in ROOT.rglob("*.py")
               if not {"tests", "build"} & set(p.relative_to(ROOT).parts)
               and not any(part.startswith(".") for part in p.relative_to(ROOT).parts)]
    assert len(sources) > 100  # the walk finds them
    long = {}
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            long[rel] = lines
    assert not long, f"over {MAX_LINES} lines: {long}"
