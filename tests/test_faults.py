"""Faults injected at every boundary of a long conversation (tests/faults.py): an exception,
or a SIGKILL of the process, at the k-th call to each boundary; then the agent is reopened in
a new process and checked (invariants, acknowledged messages kept, failed steps left no
trace, the conversation goes on).

CI runs a seeded sample; ``pytest -m slow tests/test_faults.py`` (or VMEM_SLOW=1) runs every
injection point in both modes. VMEM_FAULTS_REPORT=FILE writes the counts as JSON.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

import faults
from faults import BOUNDARIES, Fault, Injector, injecting, scenario

SLOW = bool(os.environ.get("VMEM_SLOW"))
SEED = int(os.environ.get("VMEM_FAULTS_SEED", "20261130"))


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> dict[str, int]:
    """How many times the fault-free conversation crosses each boundary."""
    path = tmp_path_factory.mktemp("dry") / "agent"
    with injecting(Injector()) as injector:
        outcome = scenario(path)
    assert outcome.acked == list(range(len(faults.user_messages()))) and not outcome.errors
    return dict(injector.calls)


def test_the_conversation_crosses_every_boundary_and_every_kind_of_event(calls, tmp_path: Path) -> None:
    assert all(calls[b] > 0 for b in BOUNDARIES), calls
    outcome = scenario(tmp_path / "a")
    from vmem.kernel import read_trace

    kinds = [e["e"] for e in read_trace(tmp_path / "a")]
    events = {k: kinds.count(k) for k in ("alert", "flush", "pagein", "call")}
    assert events["alert"] >= 2 and events["flush"] >= 2 and events["pagein"] >= 5, events
    failed_calls = [e for e in read_trace(tmp_path / "a") if e["e"] == "call" and not e["ok"]]
    assert len(failed_calls) >= 3 and outcome.acked


def _points(calls: dict[str, int], per_boundary: int | None, rng: random.Random) -> list[tuple[str, int]]:
    """Every (boundary, k), or ``per_boundary`` of each chosen at random (the first call always)."""
    out = []
    for b in BOUNDARIES:
        ks = list(range(1, calls[b] + 1))
        if per_boundary is not None and len(ks) > per_boundary:
            ks = [1, *rng.sample(ks[1:], per_boundary - 1)]
        out += [(b, k) for k in ks]
    return out


def _verify(cases: list[dict], base: Path) -> list[str]:
    """Check finished runs in a new process (as a restarted application would)."""
    file = base / "cases.json"
    file.write_text(json.dumps(cases))
    p = subprocess.run([sys.executable, faults.__file__, "verify", str(file)], capture_output=True, text=True,
                       timeout=1800)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _report(name: str, points: int, faults_fired: int, problems: list[str]) -> None:
    path = os.environ.get("VMEM_FAULTS_REPORT")
    line = {"mode": name, "injection_points": points, "faults": faults_fired, "survived": faults_fired - len(problems)}
    print(f"\nfault injection ({name}): {json.dumps(line)}")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def _raise_runs(calls: dict[str, int], base: Path, per_boundary: int | None, where=None) -> None:
    points = _points(calls, per_boundary, random.Random(SEED))
    cases, fired = [], 0
    for n, (boundary, k) in enumerate(points):
        path = base / f"r{n}-{boundary}-{k}" / "agent" if where is None else where(f"r{n}")
        with injecting(Injector(Fault(boundary, k, "raise"))) as injector:
            outcome = scenario(path)
        fired += injector.fired
        assert injector.fired, f"{boundary}:{k} never fired"
        cases.append({"dir": str(path), "acked": outcome.acked, "failed": outcome.failed})
    problems = _verify(cases, base)
    _report("exception" if where is None else "exception, PostgreSQL", len(points), fired, problems)
    assert not problems, problems[:5]


def _kill_runs(calls: dict[str, int], base: Path, per_boundary: int | None, where=None) -> None:
    points = _points(calls, per_boundary, random.Random(SEED + 1))
    cases = []
    n_messages = len(faults.user_messages())
    for n, (boundary, k) in enumerate(points):
        root = base / f"k{n}-{boundary}-{k}"
        root.mkdir(parents=True)
        acked_file = root / "acked"
        agent = str(root / "agent") if where is None else where(f"k{n}")
        p = subprocess.run([sys.executable, faults.__file__, "run", agent, "--fault",
                            str(Fault(boundary, k, "kill")), "--acked", str(acked_file)],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == -9, f"{boundary}:{k}: the child was not killed ({p.returncode}): {p.stderr[-800:]}"
        acked = [int(x) for x in acked_file.read_text().split()] if acked_file.exists() else []
        in_flight = acked[-1] + 1 if acked else 0
        cases.append({"dir": agent, "acked": acked, "failed": list(range(in_flight, n_messages)),
                      "in_flight": in_flight})
    problems = _verify(cases, base)
    _report("SIGKILL" if where is None else "SIGKILL, PostgreSQL", len(points), len(points), problems)
    assert not problems, problems[:5]


@pytest.fixture(scope="module")
def pg_calls(pg_server) -> dict[str, int]:
    """How many times the fault-free conversation crosses each boundary with a PostgreSQL agent."""
    with injecting(Injector()) as injector:
        outcome = scenario(pg_server.agent_url("dry"))
    assert outcome.acked == list(range(len(faults.user_messages()))) and not outcome.errors
    return dict(injector.calls)


@pytest.mark.postgres
def test_postgres_crosses_the_same_boundaries_as_a_directory(calls, pg_calls) -> None:
    assert all(pg_calls[b] > 0 for b in BOUNDARIES), pg_calls
    # the same scenario, the same crossings: the stores behave alike (creating a directory store
    # commits its archival settings in a transaction of their own: one commit more)
    assert {b: n for b, n in pg_calls.items() if b != "commit"} == {b: n for b, n in calls.items() if b != "commit"}
    assert calls["commit"] - pg_calls["commit"] in (0, 1)


@pytest.mark.postgres
def test_an_exception_at_a_sample_of_injection_points_on_postgres(pg_calls, pg_server, tmp_path: Path) -> None:
    _raise_runs(pg_calls, tmp_path, per_boundary=2, where=pg_server.agent_url)


@pytest.mark.postgres
def test_a_sigkill_at_a_sample_of_injection_points_on_postgres(pg_calls, pg_server, tmp_path: Path) -> None:
    _kill_runs(pg_calls, tmp_path, per_boundary=1, where=pg_server.agent_url)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not SLOW, reason="every injection point: run with -m slow (or VMEM_SLOW=1)")
def test_an_exception_at_every_injection_point_on_postgres(pg_calls, pg_server, tmp_path: Path) -> None:
    _raise_runs(pg_calls, tmp_path, per_boundary=None, where=pg_server.agent_url)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.skipif(not SLOW, reason="every injection point: run with -m slow (or VMEM_SLOW=1)")
def test_a_sigkill_at_every_injection_point_on_postgres(pg_calls, pg_server, tmp_path: Path) -> None:
    _kill_runs(pg_calls, tmp_path, per_boundary=None, where=pg_server.agent_url)


def test_an_exception_at_a_sample_of_injection_points(calls, tmp_path: Path) -> None:
    _raise_runs(calls, tmp_path, per_boundary=3)


def test_a_sigkill_at_a_sample_of_injection_points(calls, tmp_path: Path) -> None:
    _kill_runs(calls, tmp_path, per_boundary=1)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="every injection point: run with -m slow (or VMEM_SLOW=1)")
def test_an_exception_at_every_injection_point(calls, tmp_path: Path) -> None:
    _raise_runs(calls, tmp_path, per_boundary=None)


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="every injection point: run with -m slow (or VMEM_SLOW=1)")
def test_a_sigkill_at_every_injection_point(calls, tmp_path: Path) -> None:
    _kill_runs(calls, tmp_path, per_boundary=None)
