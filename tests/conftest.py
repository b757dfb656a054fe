"""Shared test setup.

- Every step of every agent in every test is followed by Memory.check() and a check that no
  tool call awaits its result (the autouse fixture below).
- ``llm_server`` (session scope): a real OpenAI-compatible LLM server; see tests/llm_server.py.
  It is defined once here, not imported into each module, so the whole session shares one
  server (a session fixture imported into two modules would be two fixtures, two servers).
- ``pg_server`` (session scope): a real PostgreSQL with pgvector; see tests/pg_server.py.
"""

from __future__ import annotations

import functools

import pytest

from llm_server import llm_server  # noqa: F401  (a fixture: pytest finds it by name)
from pg_server import pg_server  # noqa: F401  (likewise, one server per session)
from vmem.kernel import Agent


def pytest_configure(config):
    config.addinivalue_line("markers", "llm: talks to a real LLM over HTTP (the llm_server fixture)")


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
