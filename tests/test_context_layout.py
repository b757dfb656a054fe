"""The compiled context's layout keeps prompt caches warm: between two flushes and without a
core-memory edit, each request extends the previous one's prefix (all but the volatile tail:
the memory statistics with the clock, and the working set)."""

from __future__ import annotations

from pathlib import Path

from kernel_helpers import ChattyPolicy
from vmem.kernel import Agent, MemoryConfig
from vmem.kernel.drivers import ScriptedDriver

VOLATILE = ("<memory_statistics>", "<working_set")


def stable_part(messages: list[dict]) -> list[dict]:
    """The request without its volatile tail."""
    end = len(messages)
    while end and messages[end - 1]["role"] == "system" and str(messages[end - 1]["content"]).startswith(VOLATILE):
        end -= 1
    return messages[:end]


def test_each_request_extends_the_previous_one_between_flushes_and_core_edits(tmp_path: Path) -> None:
    policy = ChattyPolicy()
    driver = ScriptedDriver(policy)
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": ""}, driver=driver,
                         config=MemoryConfig(window=3584, reserve_output=256, prefetch=1))
    for i in range(40):
        agent.step(f"turn {i}: " + "some words here " * (i % 5))
    steps = [r.messages for r in driver.requests if r.tools]  # summary requests have no tools
    assert len(steps) > 40
    extended = broken = 0
    for before, after in zip(steps, steps[1:]):
        prev, cur = stable_part(before), stable_part(after)
        if cur[: len(prev)] == prev:
            extended += 1
            assert all(m["role"] == "system" and str(m["content"]).startswith(VOLATILE)
                       for m in after[len(cur):])
        else:
            broken += 1
            # only a flush (a new summary) or a core-memory edit may rewrite the prefix
            # (0 the system prompt and 1 the memory instructions never change; 2 core memory, 3 the summary)
            assert cur[:2] == prev[:2]
            assert cur[3] != prev[3] or cur[2] != prev[2], "the prefix changed without a flush or a core edit"
    flushes = sum(1 for e in agent.memory.store.events if e["e"] == "flush")
    assert flushes >= 2 and broken <= flushes and extended >= len(steps) - 1 - flushes, (extended, broken, flushes)
    agent.close()


def test_the_incremental_request_digest_equals_the_digest_from_scratch(tmp_path: Path) -> None:
    from vmem.kernel.context import context_digest

    policy = ChattyPolicy()
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": ""}, driver=ScriptedDriver(policy),
                         config=MemoryConfig(window=3584, reserve_output=256, prefetch=1))
    memory = agent.memory

    def same() -> None:
        context = memory.compile()
        assert context.digest == context_digest(context, memory.tools)

    policy.on_step = same  # before every LLM call of every step, flushes and prefetches included
    for i in range(30):
        agent.step(f"turn {i}: " + "words " * (i % 9))
        same()
    agent.close()
