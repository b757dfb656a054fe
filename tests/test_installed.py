"""vmem as pip installs it, not as the checkout runs it: the type check, and the C core's debug build.

One non-editable install per session, into a temporary directory (``pip install --no-deps
--target``, from a copy of the sources so that nothing is built inside the checkout), made with
``VMEM_CORE_DEBUG=1``: a core compiled with ``VM_DEBUG`` checks every invariant after each call
that changes a page table and aborts naming the call and the invariant (csrc/build_vmcore.py).

- mypy runs on that install, with pyproject.toml's configuration: clean on the whole package,
  strict on ``vmem.kernel``. Type checkers cannot follow setuptools' editable hook for the
  folder mapping (``kernel/`` is ``vmem.kernel``, ``app/`` is ``vmem.app``), so it never checks
  the checkout itself; the C build flags do not change what it reads.
- The core's property tests (tests/test_core_properties.py: the core against the reference
  model, a bounded sample) and tests/test_core.py run in a subprocess that imports vmem from
  that install (tests/conftest.py stops such a run if the release core is the one loaded).

Both fail when they should: a planted type error fails the first, a planted invariant break in
csrc/vm.c (a page touched "in the future" in ``vm_add``) aborts the second.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: What ``pip install .`` reads: the build configuration and the package's folders.
SOURCES = ["pyproject.toml", "setup.py", "README.md", "vmem", "kernel", "app", "csrc"]
#: Examples of each stateful property test in the debug run (the release suite runs 300).
DEBUG_EXAMPLES = 60


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding vmem installed from this checkout (not editable), with the debug core."""
    base = tmp_path_factory.mktemp("installed")
    source, target = base / "source", base / "site"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "*.o")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=ignore)
        else:
            shutil.copy2(path, source / name)
    env = {**os.environ, "VMEM_CORE_DEBUG": "1"}
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          str(source)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert (target / "vmem" / "kernel" / "memory.py").is_file() and (target / "vmem" / "app" / "cli.py").is_file()
    return target


def test_mypy_is_clean_on_the_installed_package(installed: Path, tmp_path: Path) -> None:
    import importlib.util

    assert importlib.util.find_spec("mypy") is not None, "mypy is in the dev extra: pip install -e '.[dev]'"
    # from a directory without the checkout's folders, so that only the install is found
    out = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
                          "--cache-dir", str(tmp_path / "mypy-cache"), "-p", "vmem"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=900,
                         env={**os.environ, "MYPYPATH": str(installed)})
    report = out.stdout + out.stderr
    assert out.returncode == 0, report.replace(str(installed) + os.sep, "")
    assert "Success: no issues found" in report and str(installed) not in report


def test_the_core_properties_hold_in_the_debug_build(installed: Path, tmp_path: Path) -> None:
    env = {**os.environ, "VMEM_CORE_DEBUG": "1", "VMEM_CORE_EXAMPLES": str(DEBUG_EXAMPLES),
           "PYTHONPATH": os.pathsep.join([str(installed), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    probe = subprocess.run([sys.executable, "-c", "import vmem._core as c; print(c.DEBUG_BUILD, c.__file__)"],
                           capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert probe.stdout.split()[:1] == ["True"] and probe.stdout.split()[1].startswith(str(installed)), \
        probe.stdout + probe.stderr
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-x",
                          str(ROOT / "tests" / "test_core_properties.py"), str(ROOT / "tests" / "test_core.py")],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=900)
    said = [line for line in out.stderr.splitlines() if "invariant" in line]  # the core's abort names it
    report = "\n".join([*said[:5], out.stdout[-3000:], out.stderr[-1500:]])
    assert out.returncode == 0, report  # a broken invariant aborts the process (a negative return code)
    assert "vmem core: debug build" in out.stdout and " passed" in out.stdout, report
