"""A source checkout without its compiled core, first on sys.path: what works and what says why.

After a non-editable install the checkout's vmem/ folder has no compiled core, and Python
finds it first when run from the checkout's root. These tests make such a folder (the
package's Python files, no core): the vmem command works from beside it, a plain import
fails with one clear line.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def checkout_without_core(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "vmem", tmp_path / "vmem", ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return tmp_path


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})


def test_the_vmem_command_runs_from_such_a_checkout(tmp_path):
    vmem = Path(sys.executable).with_name("vmem")  # the console script: its sys.path starts at bin/, not here
    p = subprocess.run([str(vmem), "--version"], cwd=checkout_without_core(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.startswith("vmem "), p.stderr


def test_importing_the_checkout_itself_fails_with_one_clear_line(tmp_path):
    # as after a non-editable install: the test environment's editable finder (which would supply
    # the core it built in its own source tree) is taken away first
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if '__editable__' not in "
            "getattr(f, '__module__', '')]; import vmem")
    p = run(checkout_without_core(tmp_path), "-c", code)
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: vmem's C core is not built in ") and "pip install -e ." in last
