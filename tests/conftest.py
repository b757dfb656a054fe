"""Shared test setup: every step of every agent in every test is followed by Memory.check()."""

from __future__ import annotations

import functools

import pytest

from vmem.kernel import Agent


def _checked(step):
    @functools.wraps(step)
    def run(self: Agent, *args, **kwargs):
        result = step(self, *args, **kwargs)
        _check(self)
        return result
    return run


def _achecked(astep):
    @functools.wraps(astep)
    async def run(self: Agent, *args, **kwargs):
        result = await astep(self, *args, **kwargs)
        _check(self)
        return result
    return run


def _check(agent: Agent) -> None:
    agent.memory.check()
    assert not agent.memory.pending_calls, f"calls {agent.memory.pending_calls} have no result after the step"


@pytest.fixture(autouse=True)
def check_invariants_after_every_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """Agent.step and Agent.astep verify the memory's invariants after every step that returns."""
    monkeypatch.setattr(Agent, "step", _checked(Agent.step))
    monkeypatch.setattr(Agent, "astep", _achecked(Agent.astep))
