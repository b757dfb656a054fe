"""A source checkout imported in place of the installed vmem: defer to the installed copy.

After ``pip install .`` (not editable) the C core is compiled into the installed package
only. Python puts the current directory first on ``sys.path``, so ``python -c "import
vmem"`` (or any script) run from the checkout's root finds the checkout's ``vmem/``
folder, which has no compiled core, before the installed package. Then
:func:`defer_to_installed` loads the installed vmem under the same name instead (Python
takes the module left in ``sys.modules`` when an import finishes), so everything works
from either place; with no built core anywhere it raises one clear ImportError.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path

__all__ = ["defer_to_installed"]

_CORE = "_vmcore"


def _has_core(folder: Path) -> bool:
    return any((folder / f"{_CORE}{suffix}").is_file() for suffix in importlib.machinery.EXTENSION_SUFFIXES)


def _candidates(name: str):
    """Specs of every ``name`` package the import system can find, in its order of search."""
    for finder in sys.meta_path:
        if finder is importlib.machinery.PathFinder:
            for entry in sys.path:
                yield importlib.machinery.PathFinder.find_spec(name, [entry])
        elif hasattr(finder, "find_spec"):  # e.g. an editable install's finder
            try:
                yield finder.find_spec(name, None)
            except Exception:  # noqa: BLE001 - a foreign finder's failure only means "not there"
                continue


def defer_to_installed(name: str, init_file: str) -> bool:
    """Called first by ``vmem/__init__.py``: True if another vmem (one with its compiled core)
    was loaded as ``name`` in this one's place, False if this one has its core."""
    here = Path(init_file).resolve().parent
    if _has_core(here):
        return False
    for spec in _candidates(name):
        if spec is None or spec.loader is None or not spec.origin or not spec.submodule_search_locations:
            continue
        folder = Path(spec.origin).resolve().parent
        if folder == here or not _has_core(folder):
            continue
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return True
    raise ImportError(f"vmem's C core ({_CORE}) is not built in {here} and no installed vmem has it: install "
                      "vmem (pip install .), or build it in place to work on the source (pip install -e .)")
