"""The fleet (tests/fleet.py): worker processes serve many agents from one PostgreSQL database while
they are SIGKILLed at random and restarted; afterwards nothing acknowledged is lost, nothing is
applied twice, every agent passes check() and goes on.

CI runs a sample (10 agents, 3 workers, a few kills); ``pytest -m slow tests/test_fleet.py``
(or VMEM_SLOW=1) runs the issue's fleet: 200 agents, 4 workers, at least 50 kills.
VMEM_FLEET_REPORT=FILE appends the counts as JSON.
"""

from __future__ import annotations

import json
import os

import pytest

import fleet

pytestmark = pytest.mark.postgres
SLOW = bool(os.environ.get("VMEM_SLOW"))


def _report(counts: dict) -> None:
    print(f"\nfleet: {json.dumps(counts)}")
    path = os.environ.get("VMEM_FLEET_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(counts) + "\n")


def test_a_sample_fleet_with_killed_workers_loses_and_repeats_nothing(pg_server) -> None:
    counts = fleet.run(pg_server.url, agents=10, workers=3, seconds=18, kill_every=3.0, seed=7)
    _report(counts)
    assert counts["kills"] >= 2 and counts["acknowledged"] > 0
    assert counts["lost"] == counts["duplicated"] == counts["invariant_failures"] == 0


@pytest.mark.slow
@pytest.mark.skipif(not SLOW, reason="the issue's fleet: run with -m slow (or VMEM_SLOW=1)")
def test_the_fleet_200_agents_4_workers_50_kills(pg_server) -> None:
    counts = fleet.run(pg_server.url, agents=200, workers=4, seconds=150, kill_every=2.0, seed=17)
    _report(counts)
    assert counts["kills"] >= 50
    assert counts["lost"] == counts["duplicated"] == counts["invariant_failures"] == 0
