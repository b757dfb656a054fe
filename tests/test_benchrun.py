"""vmem bench's runner: strict JSON, and suites that cannot run here reported as skipped."""

from __future__ import annotations

import json
from io import StringIO
from pathlib import Path

import pytest

from vmem.app import benchrun
from vmem.app.benchrun import Suite, print_table, run_suites, strict


@pytest.fixture
def bench_dir(tmp_path: Path) -> Path:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "figures.py").write_text("")
    (bench / "nan.py").write_text(
        "print('[{\"name\": \"odd\", \"value\": NaN, \"unit\": \"us\", \"baseline\": Infinity, \"ratio\": null, "
        "\"target\": null, \"met\": null}, {\"name\": \"fine\", \"value\": 1.5, \"unit\": \"us\"}]')\n")
    (bench / "nodata.py").write_text("import sys\nprint('data not found at /nowhere: skipping', file=sys.stderr)\n"
                                     "print('[]')\n")
    (bench / "broken.py").write_text("raise SystemExit('broken: out of luck')\n")
    return bench


def test_suites_give_strict_json_and_say_why_they_were_skipped(bench_dir, monkeypatch):
    monkeypatch.setattr(benchrun, "SUITES", (
        Suite("nan", ("bench/nan.py",), ()),
        Suite("nodata", ("bench/nodata.py",), ()),
        Suite("needs", ("bench/nan.py",), (), requires=("no_such_module_for_vmem_tests",)),
        Suite("broken", ("bench/broken.py",), ()),
    ))
    log = StringIO()
    figures = run_suites(bench_dir, log=log)
    text = json.dumps(figures, allow_nan=False)  # raises on NaN
    names = [f["name"] for f in json.loads(text)]
    assert names == ["nan: odd", "nan: fine", "nodata: skipped: data not found at /nowhere: skipping",
                     "needs: skipped: needs no-such-module-for-vmem-tests, not installed (pip install \".[test]\" "
                     "from the checkout)", "broken: suite failed"]
    assert figures[0]["value"] is None and figures[0]["baseline"] is None and figures[1]["value"] == 1.5
    assert "skipped: data not found" in log.getvalue() and "failed: broken: out of luck" in log.getvalue()
    out = StringIO()
    print_table(figures, out)
    assert "None" not in out.getvalue()


def test_strict_turns_every_non_finite_number_into_null():
    assert strict({"a": float("nan"), "b": float("-inf"), "c": 2.0, "d": "x"}) == {"a": None, "b": None, "c": 2.0,
                                                                                   "d": "x"}


def test_the_core_suite_names_what_it_needs():
    core = next(s for s in benchrun.SUITES if s.name == "core")
    assert set(core.requires) == {"pytest", "pytest_benchmark"}


def test_a_suite_whose_data_is_absent_names_the_option_that_gives_it(bench_dir, monkeypatch, tmp_path):
    """Issue 19, item 4: the skip message said "pass --path", an option vmem bench does not have."""
    (bench_dir / "data.py").write_text(
        "import sys\npath = sys.argv[sys.argv.index('--path') + 1]\n"
        "print('[{\"name\": \"read\", \"value\": %d, \"unit\": \"bytes\"}]' % len(open(path).read()))\n")
    monkeypatch.setattr(benchrun, "SUITES", (Suite("retrieval", ("bench/data.py",), (), data="locomo"),))
    figures = run_suites(bench_dir, log=StringIO())
    assert len(figures) == 1
    why = figures[0]["name"]
    default = tmp_path.parent / "shared" / "data" / "locomo" / "locomo_dev.json"
    assert why == (f"retrieval: skipped: needs {benchrun.DATA['locomo'].what}: not found at {default} "
                   "(vmem bench --locomo PATH)")
    data = tmp_path / "locomo.json"
    data.write_text("[1, 2]")
    figures = run_suites(bench_dir, log=StringIO(), data={"locomo": data})
    assert [(f["name"], f["value"]) for f in figures] == [("retrieval: read", 6)]


def test_a_skipped_suite_does_not_widen_the_table(bench_dir, monkeypatch):
    """Issue 19, item 4: a skipped suite's reason made the table 277 characters wide."""
    monkeypatch.setattr(benchrun, "SUITES", (
        Suite("nan", ("bench/nan.py",), ()),
        Suite("needs", ("bench/nan.py",), (), requires=("no_such_module_for_vmem_tests",)),
        Suite("retrieval", ("bench/nan.py",), (), data="locomo"),
    ))
    figures = run_suites(bench_dir, log=StringIO())
    out = StringIO()
    print_table(figures, out)
    table, _, skipped = out.getvalue().partition("\nskipped (2):\n")
    assert max(len(line) for line in table.splitlines()) < 60
    assert skipped.splitlines()[0].startswith("  needs: needs no-such-module-for-vmem-tests, not installed")
    assert skipped.splitlines()[1].startswith("  retrieval: needs LoCoMo's conversations")
