"""Shared test setup.

- Every step of every agent in every test is followed by Memory.check() and a check that no
  tool call awaits its result (the autouse fixture below).
- ``llm_server`` (session scope): a real OpenAI-compatible LLM server; see bench/llm_server.py.
  It is defined once here, not imported into each module, so the whole session shares one
  server (a session fixture imported into two modules would be two fixtures, two servers).
- ``VMEM_CORE_DEBUG=1`` (a run against the debug build of the C core, see
  csrc/build_vmcore.py): the session stops at once if the loaded core is not that build,
  so a run meant to assert every invariant at every change cannot pass on the release core.
- ``pg_server`` (session scope): a real PostgreSQL with pgvector; see tests/pg_server.py.
"""

from __future__ import annotations

import functools
import os

import pytest

from llm_server import llm_server  # noqa: F401  (a fixture: pytest finds it by name)
from pg_server import pg_server  # noqa: F401  (likewise, one server per session)
from vmem.kernel import Agent


def pytest_configure(config):
    config.addinivalue_line("markers", "llm: talks to a real LLM over HTTP (the llm_server fixture)")
    if os.environ.get("VMEM_CORE_DEBUG") == "1":
        import vmem._core

        if not vmem._core.DEBUG_BUILD:
            pytest.exit(f"VMEM_CORE_DEBUG=1 but {vmem._core.__file__} loads the release core: build the debug "
                        "one (VMEM_CORE_DEBUG=1 pip install .) and run pytest from that install", returncode=4)


def pytest_report_header(config):
    import vmem._core

    if vmem._core.DEBUG_BUILD:
        return "vmem core: debug build (every invariant asserted after every change)"
    return None


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


#: The stores a memory can live in: a directory (embedded SQLite) or an agent in PostgreSQL.
STORES = ["dir", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store the test's memories live in ("dir" or "postgres"): tests that take it run on both."""
    return request.param


@pytest.fixture
def place(store_kind: str, tmp_path, request: pytest.FixtureRequest):
    """``place(name)`` -> a location for a memory called ``name`` in the store under test: a
    directory under ``tmp_path``, or a fresh agent in the session's PostgreSQL (the same name
    gives the same location within a test)."""
    if store_kind == "dir":
        return lambda name: tmp_path / name
    server = request.getfixturevalue("pg_server")
    made: dict[str, str] = {}
    return lambda name: made.setdefault(name, server.agent_url(name))
