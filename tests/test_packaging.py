"""What pip is asked for exists (issue 19, item 12): the test install warned "pymilvus 3.0.2
does not provide the extra 'milvus_lite'"."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parents[1]


def test_every_extra_asked_of_an_installed_dependency_is_one_it_provides() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    checked = 0
    for line in wanted:
        req = requirements.Requirement(line)
        if not req.extras or req.name == "vmem":
            continue
        try:
            provides = set(md.metadata(req.name).get_all("Provides-Extra") or ())
        except md.PackageNotFoundError:
            continue  # not installed here: pip would say so itself
        checked += 1
        # spelled exactly as the package declares it: pip before 23.3 (what Python 3.11's venv brings)
        # does not normalise extras' names, and warns instead of installing them
        missing = {e for e in req.extras if e not in provides}
        assert not missing, f"{line}: {req.name} {md.version(req.name)} provides no extra {sorted(missing)}"
