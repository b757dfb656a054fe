"""A source checkout without its compiled core, first on sys.path: vmem still imports.

After a non-editable install the checkout's vmem/ folder has no compiled core, and Python
finds it first when run from the checkout's root. These tests make such a folder (the
package's Python files, no core) and import vmem from beside it.
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


def test_a_checkout_without_its_core_defers_to_the_installed_vmem(tmp_path):
    where = checkout_without_core(tmp_path)
    p = run(where, "-c", "import vmem, vmem.kernel; print(vmem.__file__); print(vmem.PagedContext().stats().used)")
    assert p.returncode == 0, p.stderr
    first, used = p.stdout.split()
    assert Path(first).parent != where / "vmem" and used == "0"


def test_the_command_line_runs_from_such_a_checkout(tmp_path):
    p = run(checkout_without_core(tmp_path), "-m", "vmem.app.cli", "--version")
    assert p.returncode == 0 and p.stdout.startswith("vmem "), p.stderr


def test_with_no_core_anywhere_the_error_is_one_clear_line(tmp_path):
    p = run(checkout_without_core(tmp_path), "-S", "-c", "import vmem")  # -S: no site-packages, no installed vmem
    assert p.returncode == 1
    assert p.stderr.strip().splitlines()[-1].startswith("ImportError: vmem's C core (_vmcore) is not built in ")
    assert "pip install ." in p.stderr
