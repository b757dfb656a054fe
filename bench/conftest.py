"""pytest-benchmark set-up shared by the micro benchmarks in bench/.

Each benchmark group holds a ``core`` (or otherwise fast) variant and its
``reference`` baseline measured in the same run; at the end of the session a
table prints each group's medians, their ratio, and the target (from
``benchmark.extra_info``), because absolute times on a shared machine are noise
and ratios are not.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("VMEM_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--figures", metavar="PATH", default=None,
                     help="also write the figures (see bench/figures.py) as a JSON list to PATH")


@pytest.fixture(scope="session")
def locomo_texts() -> list[str]:
    """Every turn of the LoCoMo dev conversations (skips when the data is absent)."""
    path = DATA / "locomo" / "locomo_dev.json"
    if not path.exists():
        pytest.skip(f"LoCoMo data not found at {path} (set VMEM_DATA to the shared data folder)")
    texts = []
    for conv in json.loads(path.read_text()):
        for key, turns in conv["conversation"].items():
            if key.startswith("session_") and isinstance(turns, list):
                texts.extend(t["text"] for t in turns)
    return texts


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups: dict[str, dict[str, object]] = {}
    for bench in session.benchmarks:
        groups.setdefault(bench.group or bench.name, {})[bench.extra_info.get("variant", bench.name)] = bench
    tr = terminalreporter
    tr.section("vmem: medians and ratios (baseline / fast, same run)")
    tr.write_line(f"{'group':34} {'fast':>12} {'baseline':>12} {'ratio':>9}  target")
    for name, variants in groups.items():
        fast = variants.get("core")
        base = variants.get("reference")
        if fast is None:
            continue
        f = fast.stats.median
        unit_scale, unit = (1e6, "us") if f < 1e-3 else (1e3, "ms")
        line = f"{name:34} {f * unit_scale:>9.2f} {unit}"
        if base is not None:
            b = base.stats.median
            line += f" {b * unit_scale:>9.2f} {unit} {b / f:>8.1f}x"
        else:
            line += " " * 23
        target = fast.extra_info.get("target")
        if target:
            line += f"  {target}"
        tr.write_line(line)
    for bench in session.benchmarks:
        for key, value in bench.extra_info.items():
            if key not in ("variant", "target", "limits", "checks"):
                tr.write_line(f"  {bench.group}/{bench.extra_info.get('variant')}: {key} = {value}")
    path = config.getoption("--figures")
    if path:
        _write_figures(groups, session.benchmarks, path)


def _write_figures(groups, benchmarks, path: str) -> None:
    """The micro benchmarks as figures: each group's fast median beside its baseline."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from figures import Figure

    figures = []
    for name, variants in groups.items():
        fast, base = variants.get("core"), variants.get("reference")
        if fast is None:
            continue
        f = fast.stats.median
        unit = "us" if f < 1e-3 else "ms"
        b = base.stats.median if base else None
        limits = fast.extra_info.get("limits", {})
        met = None
        if "max_us" in limits or "min_ratio" in limits:
            met = bool(f * 1e6 <= limits.get("max_us", float("inf")) and (
                b is not None and b / f >= limits.get("min_ratio", 0)))
        figures.append(Figure.timed(name, f, b, unit=unit, target=fast.extra_info.get("target"), met=met))
    for bench in benchmarks:
        checks = bench.extra_info.get("checks", {})
        for key, value in bench.extra_info.items():
            if key in ("variant", "target", "limits", "checks") or not isinstance(value, (int, float)):
                continue
            check = checks.get(key)
            met = target = None
            if check:
                op, bound = check
                target = f"{op} {bound}"
                met = bool({">=": value >= bound, "<=": value <= bound, "|x|<=": abs(value) <= bound}[op])
            figures.append(Figure(f"{bench.group}: {key}", float(value), "", target=target, met=met))
    Path(path).write_text(json.dumps([f.__dict__ for f in figures], indent=1))
