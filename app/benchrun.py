"""``vmem bench``: run every benchmark suite in a checkout's bench/ folder, print one table.

The package never imports bench/: each suite runs as a subprocess that prints
its figures (the shape in bench/figures.py) as JSON, and this module merges
them. Every figure carries its baseline measured in the same run.

A suite that cannot run here (a package it needs is not installed, its data is
absent) is reported as one ``SUITE: skipped: why`` figure with no value, its reason
naming the ``vmem bench`` option or the install that makes it run; one that fails, as
``SUITE: suite failed``. The table lists the skipped suites below it, not as rows (a
reason is a sentence, not a figure). Figures are strict JSON: a value that is not a
finite number (NaN, infinity) becomes None (``null``).

What runs where: after the main job's ``pip install .`` every suite but ``core`` runs
(``core`` needs pytest-benchmark: ``pip install ".[test]"``); ``search``, ``page-fault``
and ``retrieval`` need LoCoMo's data (``--locomo FILE``), ``nested-kv`` MemGPT's nested
key-value data (``--nested-kv DIR``); both are read from ``../shared/data`` beside the
checkout by default, and are not part of the repository.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

__all__ = ["DATA", "SUITES", "DataSet", "find_bench_dir", "run_suites", "print_table", "strict"]

FIELDS = ("name", "value", "unit", "baseline", "ratio", "target", "met")


@dataclass(frozen=True)
class Suite:
    name: str
    args: tuple[str, ...]  # after the interpreter
    quick: tuple[str, ...]  # added with --quick
    figures_file: bool = False  # the suite writes figures to a file (pytest), not to stdout
    requires: tuple[str, ...] = ()  # modules it needs beyond vmem's own dependencies
    shares_stores: bool = False  # takes --dir: the stores it builds serve the other such suites of the run
    timeout: float = 900  # seconds
    data: str | None = None  # the DATA set it reads (passed to it as --path)


@dataclass(frozen=True)
class DataSet:
    """Data a suite reads, not shipped with vmem: where it is looked for and how to name it."""

    option: str  #: the ``vmem bench`` option that names it
    what: str  #: what it is, for the skip message
    default: tuple[str, ...]  #: its path under the checkout's parent folder


DATA = {
    "locomo": DataSet("--locomo", "LoCoMo's conversations (locomo_dev.json, or locomo10.json from "
                      "github.com/snap-research/LoCoMo)", ("shared", "data", "locomo", "locomo_dev.json")),
    "nested-kv": DataSet("--nested-kv", "MemGPT's nested key-value data (the folder of "
                         "kv-retrieval-140_keys.jsonl.gz, from the MemGPT repository's paper_experiments)",
                         ("shared", "data", "nested_kv")),
}


SUITES = (
    Suite("core", ("-m", "pytest", "bench_core.py", "-q", "-p", "no:cacheprovider"),
          ("--benchmark-max-time=0.05", "--benchmark-min-rounds=3"), figures_file=True,
          requires=("pytest", "pytest_benchmark")),
    Suite("search", ("bench/bench_search.py", "--json"), ("--quick",), shares_stores=True, timeout=1800,
          data="locomo"),
    Suite("page-fault", ("bench/bench_pagefault.py", "--json"), ("--quick",), shares_stores=True, timeout=1800,
          data="locomo"),
    Suite("page-in", ("bench/bench_pagein.py", "--json"), ("--quick",)),
    Suite("storage", ("bench/bench_storage.py", "--json"), ("--quick",)),
    Suite("retrieval", ("bench/locomo_retrieval.py", "--json", "--no-progress"), ("--quick",), data="locomo"),
    Suite("kernel", ("bench/bench_kernel.py", "--json"), ("--quick",)),
    Suite("nested-kv", ("bench/nested_kv.py", "--json"), ("--quick",), data="nested-kv"),
)


def find_bench_dir(explicit: str | None = None) -> Path:
    """The checkout's bench/ folder: ``explicit``, ./bench, or beside the installed kernel package."""
    candidates = [Path(explicit)] if explicit else [Path.cwd() / "bench",
                                                     Path(__file__).resolve().parents[1] / "bench"]
    for c in candidates:
        if (c / "figures.py").is_file():
            return c.resolve()
    raise FileNotFoundError("vmem bench runs the benchmarks of a source checkout: no bench/ folder found "
                            f"(looked in {', '.join(map(str, candidates))}); pass --bench-dir")


def _last_json_list(text: str) -> list[dict[str, Any]]:
    start = text.rfind("\n[")
    start = 0 if text.startswith("[") and start < 0 else start + 1
    return json.loads(text[start:])


def run_suites(bench_dir: Path, *, quick: bool = False, only: set[str] | None = None,
               log: TextIO = sys.stderr, timeout: float | None = None,
               data: dict[str, Path | None] | None = None) -> list[dict[str, Any]]:
    """Run the suites; return their figures, names prefixed by suite. A failed suite adds one
    figure with ``met`` False (and its error goes to ``log``), so a report never hides it.
    ``timeout``: seconds per suite (default: each suite's own). ``data``: where each
    :data:`DATA` set is (default: under the checkout's parent folder)."""
    with tempfile.TemporaryDirectory(prefix="vmem-bench-stores-") as stores:
        return _run(bench_dir, quick, only, log, timeout, Path(stores), data or {})


def data_path(bench_dir: Path, key: str, given: dict[str, Path | None]) -> Path:
    """Where data set ``key`` is looked for: as given, or its default beside the checkout."""
    path = given.get(key)
    return Path(path) if path else bench_dir.parent.parent.joinpath(*DATA[key].default)


def _run(bench_dir: Path, quick: bool, only: set[str] | None, log: TextIO, timeout: float | None,
         stores: Path, data: dict[str, Path | None]) -> list[dict[str, Any]]:
    # The suites import the installed vmem: the checkout's own vmem/ (which holds no compiled
    # core after a non-editable install) must not come first, so nothing puts the checkout on
    # sys.path: scripts run as files (their own folder is bench/), pytest runs from bench/.
    root = bench_dir.parent
    env = dict(os.environ)
    figures: list[dict[str, Any]] = []
    suites = [s for s in SUITES if not only or s.name in only]
    for n, suite in enumerate(suites, 1):
        log.write(f"[{n}/{len(suites)}] {suite.name} ...")
        log.flush()
        t0 = time.perf_counter()
        missing = [m for m in suite.requires if importlib.util.find_spec(m) is None]
        if missing:
            why = (f"needs {' and '.join(m.replace('_', '-') for m in missing)}, not installed "
                   f"(pip install \".[test]\" from the checkout)")
            log.write(f" skipped: {why}\n")
            figures.append(_skipped(suite.name, why))
            continue
        where = data_path(bench_dir, suite.data, data) if suite.data else None
        if where is not None and not where.exists():
            d = DATA[str(suite.data)]
            why = f"needs {d.what}: not found at {where} (vmem bench {d.option} PATH)"
            log.write(f" skipped: {why}\n")
            figures.append(_skipped(suite.name, why))
            continue
        with tempfile.TemporaryDirectory() as tmp:
            args = [sys.executable, *suite.args, *(suite.quick if quick else ())]
            out_file = Path(tmp) / "figures.json"
            if suite.figures_file:
                args.append(f"--figures={out_file}")
            if suite.shares_stores:
                args += ["--dir", str(stores)]
            if where is not None:
                args += ["--path", str(where.resolve())]
            try:
                cwd = bench_dir if suite.figures_file else root
                proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                                      timeout=timeout or suite.timeout)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip()
                                       else f"exit code {proc.returncode}")
                found = json.loads(out_file.read_text()) if suite.figures_file else _last_json_list(proc.stdout)
            except Exception as exc:  # noqa: BLE001 - reported as a failed figure, never swallowed
                log.write(f" failed: {exc}\n")
                figures.append({"name": f"{suite.name}: suite failed", "value": None, "unit": "",
                                "baseline": None, "ratio": None, "target": "runs", "met": False})
                continue
        if not found:  # the suite ran but measured nothing: its data is absent (it says why on stderr)
            lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
            why = lines[-1] if lines else "it reported no figures"
            log.write(f" skipped: {why}\n")
            figures.append(_skipped(suite.name, why))
            continue
        for f in found:
            figures.append(strict({k: f.get(k) for k in FIELDS} | {"name": f"{suite.name}: {f['name']}"}))
        log.write(f" {len(found)} figures, {time.perf_counter() - t0:.0f} s\n")
    return figures


def _skipped(suite: str, why: str) -> dict[str, Any]:
    return {"name": f"{suite}: skipped: {why}", "value": None, "unit": "", "baseline": None, "ratio": None,
            "target": None, "met": None}


def strict(figure: dict[str, Any]) -> dict[str, Any]:
    """The figure with every number that JSON cannot carry (NaN, infinity) as None."""
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in figure.items()}


def print_table(figures: list[dict[str, Any]], out: TextIO = sys.stdout) -> None:
    """One table: figure, value, baseline (same run), ratio, target, met; then the suites
    skipped, each with its reason on a line of its own."""
    rows = [("figure", "value", "baseline", "ratio", "target", "met")]
    skipped = [f["name"] for f in figures if ": skipped: " in f["name"]]
    for f in figures:
        if f["name"] in skipped:
            continue
        unit = f" {f['unit']}" if f.get("unit") else ""
        value = f["value"]
        rows.append((f["name"], f"{value:,.4g}{unit}" if isinstance(value, (int, float)) else str(value or ""),
                     f"{f['baseline']:,.4g}{unit}" if isinstance(f.get("baseline"), (int, float)) else "",
                     f"{f['ratio']:,.1f}x" if isinstance(f.get("ratio"), (int, float)) else "",
                     f.get("target") or "", {True: "yes", False: "NO", None: ""}[f.get("met")]))
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    for k, r in enumerate(rows):
        out.write("  ".join(c.ljust(w) if i in (0, 4) else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths))).rstrip() + "\n")
        if k == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    if skipped:
        out.write(f"\nskipped ({len(skipped)}):\n")
        for name in skipped:
            suite, _, why = name.partition(": skipped: ")
            out.write(f"  {suite}: {why}\n")
