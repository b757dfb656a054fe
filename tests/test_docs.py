"""The package's own documentation cannot go stale: what its module headers show must hold.

- Every import a module's docstring shows (its ``Interface::`` block, its examples)
  resolves in the installed package: the module exists under ``vmem`` (not a checkout
  folder such as ``app``, which would load a second copy of the module) and has each
  name.
- The lists of modules in ``vmem.kernel``'s and ``Memory``'s headers name modules that
  exist, and ``vmem.kernel``'s names them all.
- ``vmem --help``'s header in app/cli.py lists every command.

tests/test_readme.py does the same for the README.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]
CHECKOUT_FOLDERS = {"app", "kernel", "csrc", "bench", "tests", "docs"}


def package_modules() -> list[str]:
    """Every module of the package (vmem.kernel and vmem.app live in their own folders)."""
    names = set()
    for top in ("vmem", "vmem.kernel", "vmem.app"):
        package = importlib.import_module(top)
        names |= {top, *(m.name for m in pkgutil.walk_packages(package.__path__, top + "."))}
    return sorted(names)


def shown_imports(doc: str) -> list[ast.ImportFrom | ast.Import]:
    """The import statements a docstring shows (a statement may span lines in parentheses)."""
    out: list[ast.ImportFrom | ast.Import] = []
    pending = ""
    for line in doc.splitlines():
        text = line.strip()
        if pending:
            pending += " " + text
        elif text.startswith(("from ", "import ")) and re.match(r"(from\s+[\w.]+\s+import\s|import\s+[\w.]+)", text):
            pending = text
        else:
            continue
        if pending.count("(") > pending.count(")"):
            continue
        statement = re.sub(r"\s+#.*$", "", pending).replace("\\_", "_")
        pending = ""
        tree = ast.parse(statement)
        out.extend(n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    return out


CASES = [(name, node) for name in package_modules()
         for node in shown_imports(importlib.import_module(name).__doc__ or "")]


def test_the_package_shows_imports_in_its_headers():
    assert len(CASES) >= 15  # the parser finds them: a change that loses them fails here


@pytest.mark.parametrize("module, statement", CASES, ids=[f"{m}:{ast.unparse(s)}" for m, s in CASES])
def test_every_import_a_module_header_shows_resolves(module: str, statement: ast.ImportFrom | ast.Import) -> None:
    if isinstance(statement, ast.Import):
        targets = [(alias.name, None) for alias in statement.names]
    else:
        assert statement.level == 0 and statement.module, f"{module}: relative import in a header"
        targets = [(statement.module, alias.name) for alias in statement.names]
    for target, name in targets:
        top = target.split(".")[0]
        assert top not in CHECKOUT_FOLDERS, f"{module} shows {target}: import it as vmem.{target.split('.', 1)[-1]}"
        imported = importlib.import_module(target)
        if name is not None and name != "*":
            assert hasattr(imported, name) or importlib.util.find_spec(f"{target}.{name}") is not None, \
                f"{module}'s header imports {name} from {target}, which has no such name"


def kernel_modules() -> set[str]:
    return {p.stem for p in (ROOT / "kernel").glob("*.py") if p.stem != "__init__"} | {"drivers"}


def test_the_kernel_header_names_every_kernel_module_and_no_other():
    import vmem.kernel

    named = set(re.findall(r"``(\w+)/?``", (vmem.kernel.__doc__ or "").split("Modules, one concept each")[1].split("\n\n")[0]))
    modules = kernel_modules()
    assert modules - named == set(), "vmem.kernel's header does not name these modules"
    assert {n for n in named if n.islower() and n not in modules} == set(), "named but not there"


def test_the_memory_header_names_kernel_modules_only():
    import vmem.kernel.memory

    table = (vmem.kernel.memory.__doc__ or "").split("==================")[1:]
    named = set(re.findall(r"``(\w+)``", "".join(table)))
    assert named and named <= kernel_modules(), named - kernel_modules()


def test_the_cli_header_lists_every_command():
    from vmem.app import cli

    listed = set(re.findall(r"^    vmem (\w+)", cli.__doc__ or "", re.M))
    commands = {c.name for c in cli.COMMANDS}
    assert listed == commands, (commands - listed, listed - commands)


PUBLIC = ["vmem", "vmem.storage", "vmem.kernel", "vmem.kernel.drivers", "vmem.kernel.drivers.agents_sdk",
          "vmem.app.agentfile"]  # agents_sdk: the OpenAI Agents SDK adapter (needs openai-agents)


@pytest.mark.parametrize("package", PUBLIC)
def test_the_public_surface_is_declared_and_documented(package: str) -> None:
    """Each public package states its API in ``__all__``; every name there resolves and says
    what it is (modules behind it are implementation: importable, not promised)."""
    module = importlib.import_module(package)
    names = getattr(module, "__all__", None)
    assert names and len(set(names)) == len(names), f"{package} declares no __all__ (or repeats a name)"
    undocumented = []
    for name in names:
        value = getattr(module, name)  # AttributeError: __all__ names something that is not there
        if (callable(value) or isinstance(value, type)) and not (getattr(value, "__doc__", None) or "").strip():
            undocumented.append(name)
    assert not undocumented, f"{package}: public names without a docstring: {undocumented}"


def _user_facing_imports() -> list[tuple[str, ast.ImportFrom]]:
    """The ``from vmem... import`` statements of what a user copies: the README and examples/."""
    texts = [("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))]
    texts += [(f"examples/{p.name}", p.read_text(encoding="utf-8")) for p in sorted((ROOT / "examples").glob("*.py"))]
    return [(where, node) for where, text in texts for node in shown_imports(text)
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "vmem"]


def test_the_readme_and_the_examples_import_only_the_public_surface() -> None:
    """What a user copies imports from a public package (``PUBLIC``) and only names in its ``__all__``:
    the modules behind it may change."""
    found = _user_facing_imports()
    assert {where for where, _ in found} >= {"README.md", "examples/openai_own_loop.py"}  # the parser finds them
    for where, node in found:
        assert node.module in PUBLIC, f"{where} imports from {node.module}, which is not a public package"
        public = set(importlib.import_module(node.module).__all__)
        private = [a.name for a in node.names if a.name not in public]
        assert not private, f"{where}: {node.module} does not list {private} in __all__"
