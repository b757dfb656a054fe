"""An agent that survives: atomic steps and transactions, bounded work, concurrent use refused,
read-only access beside a writer, and the store's own API kept in agreement with the memory."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kernel_helpers import ChattyPolicy, call
from vmem.kernel import (
    Agent,
    BusyError,
    ContextWindowError,
    KernelError,
    Memory,
    MemoryConfig,
    MessageError,
    ReadOnlyError,
    memory_function,
)
from vmem import Region
from vmem.kernel.drivers import Completion, ScriptedDriver
from vmem.kernel.summary import fold
from vmem.kernel.tokens import TokenCounter
from vmem.storage import ReadOnlyStoreError, StoreOwnedError

BLOCKS = {"human": "", "persona": "I am careful."}


def new_agent(path: Path, script, functions=(), **config) -> Agent:
    return Agent.create(path, system="You are a test agent.", blocks=BLOCKS, driver=ScriptedDriver(script),
                        functions=functions, config=MemoryConfig(**{"window": 4608, **config}))


# ---------------------------------------------------------------- what a new user hit


@memory_function
def flaky_lookup(memory, key: str) -> str:
    """Look a key up in a service that is down.

    Args:
        key: the key.
    """
    memory.set_block("human", "written before the failure")  # undone with the failed call
    raise RuntimeError("connection reset by peer")


def test_a_user_function_that_raises_is_a_function_error_and_the_agent_goes_on(place) -> None:
    script = []
    for n in range(2):
        script += [Completion(tool_calls=[call("flaky_lookup", heartbeat=True, cid=f"f{n}", key="k")]),
                   Completion(tool_calls=[call("send_message", cid=f"s{n}", message=f"answer {n}")])]
    agent = new_agent(place("a"), script, functions=[flaky_lookup])
    for n in range(2):
        result = agent.step(f"question {n}")
        assert result.replies == [f"answer {n}"]
        failed = result.calls[0]
        assert not failed.ok and "RuntimeError: connection reset by peer" in json.loads(failed.result)["message"]
        assert agent.memory.block("human").value == ""  # the failed call's edit was undone
    digest = agent.memory.digest()
    agent.close()
    again = Agent.open(place("a"), driver=ScriptedDriver([Completion(text="still here")]),
                       functions=[flaky_lookup])
    assert again.memory.digest() == digest
    users = [m["content"] for m in again.memory.compile() if m["role"] == "user"]
    assert users == ["question 0", "question 1"]
    assert again.step("question 2").replies == ["still here"]
    again.close()


# ---------------------------------------------------------------- all or nothing


@memory_function
def interrupted(memory) -> str:
    """Work that the user interrupts with Ctrl-C."""
    memory.set_block("human", "half-done")
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["user function", "driver"])
def test_ctrl_c_leaves_the_agent_exactly_as_before_the_step(place, where: str) -> None:
    script = [Completion(tool_calls=[call("send_message", message="first")])]
    if where == "user function":
        script += [Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="human", content="x")]),
                   Completion(tool_calls=[call("interrupted", heartbeat=True)])]
    else:
        script += [Completion(tool_calls=[call("archival_memory_insert", heartbeat=True, content="a note")]),
                   KeyboardInterrupt()]
    agent = new_agent(place("a"), script, functions=[interrupted])
    agent.step("hello")
    before = agent.memory.digest()
    with pytest.raises(KeyboardInterrupt):
        agent.step("this step is interrupted")
    assert agent.memory.digest() == before
    agent.memory.check()
    agent.driver.push(Completion(tool_calls=[call("send_message", message="back")]))
    assert agent.step("again").replies == ["back"]
    agent.close()


def test_a_failing_save_raises_its_own_error_and_changes_nothing(place, monkeypatch) -> None:
    agent = new_agent(place("a"), [Completion(text="one"), Completion(text="two"), Completion(text="three")])
    agent.step("one")
    before = agent.memory.digest()
    from vmem.kernel.persistence import Saver

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Saver, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        agent.step("two")
    monkeypatch.undo()
    assert agent.memory.digest() == before
    assert agent.step("two").replies == ["three"]  # (the failed step used the script's "two")
    agent.close()


def test_nested_transactions_join_and_an_escaped_error_aborts_the_whole(place) -> None:
    memory = Memory.create(place("m"), system="s", blocks={"human": ""})
    before = memory.digest()
    with pytest.raises(KernelError, match="aborted by an earlier error"):
        with memory.transaction():
            memory.append({"role": "user", "content": "kept?"})
            with pytest.raises(MessageError):
                memory.append({"role": "tool", "tool_call_id": "nope", "content": "x"})  # no pending call
            with pytest.raises(KernelError, match="aborted"):
                memory.set_block("human", "no: the transaction is aborted")
    assert memory.digest() == before
    with memory.transaction():
        memory.append({"role": "user", "content": "kept"})
        with pytest.raises(ValueError):
            with memory.savepoint():  # a part that may fail alone
                memory.set_block("human", "undone")
                raise ValueError("the part fails")
        memory.set_block("human", "kept too")
    assert [m["content"] for m in memory.compile() if m["role"] == "user"] == ["kept"]
    assert memory.block("human").value == "kept too"
    memory.check()
    memory.close()


def test_an_oversize_tool_call_from_the_model_is_stored_whole_and_queued_shortened(place) -> None:
    huge = "word " * 60_000
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("archival_memory_insert", heartbeat=True, content=huge)]),
        Completion(tool_calls=[call("send_message", message="saved")]),
    ])
    result = agent.step("save this")
    assert result.replies == ["saved"]
    queued = [m for m in agent.memory.compile() if m.get("tool_calls")][0]
    assert len(queued["tool_calls"][0]["function"]["arguments"]) < 10_000
    stored = agent.memory.store.recall.search(None, roles=["assistant"], page_size=10).items
    assert any(len(m.meta["tool_calls"][0]["function"]["arguments"]) > len(huge) for m in stored)
    agent.close()


# ---------------------------------------------------------------- bounded


def test_a_verbose_summarizer_is_cut_to_the_cap_and_the_agent_goes_on(place) -> None:
    policy = ChattyPolicy()
    chatty = policy.__call__

    def verbose(messages, tools):
        out = chatty(messages, tools)
        if not tools:  # the summarizer writes ten times what it was asked for
            return Completion(text=out.text + " and more" * 3000)
        return out

    agent = Agent.create(place("a"), system="s", blocks={}, driver=ScriptedDriver(verbose),
                         config=MemoryConfig(window=3584, reserve_output=256))
    for i in range(60):
        agent.step(f"turn {i}: " + "lorem ipsum dolor " * 12)
    memory = agent.memory
    assert memory.state.folds >= 2 and memory.state.truncated >= 2
    assert memory.counter.count(memory.summary) <= memory.pressure.summary_cap
    assert memory.summary.endswith("[summary cut to its cap]")
    assert any(e["e"] == "summary_cut" for e in memory.store.events)
    agent.close()


def test_folding_always_progresses_even_when_every_character_costs_many_tokens() -> None:
    count = TokenCounter.count
    line = "深" * 4000  # one token or more per character, in one line far over the budget
    gen = fold("", [line], budget=400, words=50, cap=200, count=count)
    request, requests = next(gen), 0
    folded = ""
    try:
        while True:
            requests += 1
            assert requests < 400, "folding does not progress"
            chunk = request[-1]["content"].split("Messages to fold in:\n", 1)[1]
            folded += chunk.removeprefix("(continued) ")
            assert count(request[0]["content"]) + count(request[-1]["content"]) <= 400 + 8
            request = gen.send("a summary")
    except StopIteration:
        pass
    assert folded == line  # every character folded, none dropped


# ---------------------------------------------------------------- one at a time


def test_a_second_concurrent_step_gets_a_clear_error(place) -> None:
    started, release = threading.Event(), threading.Event()

    def slow(messages, tools):
        started.set()
        release.wait(10)
        return Completion(text="slow answer")

    agent = Agent.create(place("a"), system="s", blocks={}, driver=ScriptedDriver(slow))
    out: list[object] = []
    worker = threading.Thread(target=lambda: out.append(agent.step("first")))
    worker.start()
    assert started.wait(10)
    with pytest.raises(BusyError, match="already running"):
        agent.step("second")
    with pytest.raises(BusyError, match="another step or transaction"):
        agent.memory.set_block("s" if False else "x", "y")  # the memory is busy too
    release.set()
    worker.join(10)
    assert out[0].replies == ["slow answer"]
    agent.close()


def test_two_concurrent_asteps_one_is_refused(place) -> None:
    async def slow(messages, tools):
        await asyncio.sleep(0.05)
        return Completion(text="answer")

    agent = Agent.create(place("a"), system="s", blocks={}, driver=ScriptedDriver(slow))

    async def both():
        return await asyncio.gather(agent.astep("one"), agent.astep("two"), return_exceptions=True)

    results = asyncio.run(both())
    assert sum(isinstance(r, BusyError) for r in results) == 1
    assert [r.replies for r in results if not isinstance(r, BaseException)] == [["answer"]]
    agent.close()


# ---------------------------------------------------------------- read-only beside a writer


def test_inspection_reads_a_running_agent_and_writes_nothing(place) -> None:
    agent = new_agent(place("a"), [Completion(tool_calls=[call("core_memory_append", label="human",
                                                                    content="likes tea")]),
                                       Completion(text="noted")])
    agent.step("I like tea")  # the agent stays open: its process holds the directory
    view = Memory.open(place("a"), read_only=True)
    assert view.compile() == agent.memory.compile()
    with pytest.raises(ReadOnlyError):
        view.append({"role": "user", "content": "no"})
    with pytest.raises(ReadOnlyStoreError):
        view.store.recall.append("user", "no")
    view.close()
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "inspect", str(place("a"))],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "likes tea" in p.stdout
    assert agent.step("and coffee").replies == ["noted"]  # the writer never noticed
    agent.close()


# ---------------------------------------------------------------- the store's API and the memory agree


def test_writes_through_the_store_work_with_the_memory_or_are_refused(place) -> None:
    agent = new_agent(place("a"), [Completion(text="a"), Completion(text="b")])
    memory = agent.memory
    agent.step("hello")
    memory.store.recall.append("user", "imported history, written beside the agent")
    memory.store.archival.insert("a passage written beside the agent")
    with pytest.raises(StoreOwnedError, match="add_block"):
        memory.store.blocks.create("notes", "x")
    memory.add_block("notes", "kept by the developer", limit=500)
    agent.step("again")  # counts the history as stored-only, the passage in the statistics
    assert memory.state.stored_only == 1
    assert "1 passages in archival storage" in memory.stats.text
    assert "kept by the developer" in memory.compile()[2]["content"]  # system, memory instructions, core
    with pytest.raises(ContextWindowError):
        memory.add_block("huge", "word " * 5000, limit=100_000)
    memory.update_block("notes", value="changed", read_only=True)
    memory.delete_block("persona")
    memory.check()
    digest = memory.digest()
    agent.close()
    with Memory.open(place("a")) as again:
        again.check()
        assert again.digest() == digest


def test_reopening_with_more_functions_shrinks_the_working_set_instead_of_failing(place) -> None:
    agent = new_agent(place("a"), [Completion(text="ok")] * 12, prefetch=3, window=4096, reserve_output=256)
    agent.memory.archival_insert_many([f"fact {i}: the cat sat on mat number {i} " * 3 for i in range(30)])
    for i in range(6):
        agent.step(f"which mat did the cat sit on, {i}?")
    assert agent.memory.state.workset
    agent.close()

    def big() -> str:
        return "done"

    big.__doc__ = "A tool with a long description. " + "It explains itself at length. " * 60
    fat = memory_function(big, name="verbose_tool")
    again = Agent.open(place("a"), driver=ScriptedDriver([Completion(text="ok")]), functions=[fat])
    shrunk = [e for e in again.memory.store.events if e["e"] == "workset_shrunk"]
    assert shrunk and shrunk[0]["evicted"], "the scenario must overfill the smaller working set"
    assert again.memory.ctx.stats().tokens[Region.WORKSET] <= again.memory.ctx.config.ws_budget
    again.memory.check()
    assert again.step("still fine?").replies == ["ok"]
    again.close()


def test_a_summarizer_that_answers_nothing_loses_nothing(place) -> None:
    policy = ChattyPolicy()

    def mute(messages, tools):
        return Completion(text="   ") if not tools else policy(messages, tools)

    agent = Agent.create(place("a"), system="s", blocks={}, driver=ScriptedDriver(mute),
                         config=MemoryConfig(window=3584, reserve_output=256))
    for i in range(40):
        agent.step(f"turn {i}: " + "lorem ipsum dolor " * 10)
    memory = agent.memory
    assert memory.state.folds >= 2 and "without a summary; search them with conversation_search" in memory.summary
    assert any(e["e"] == "summary_empty" for e in memory.store.events)
    assert memory.conversation_search("turn 0").total >= 1
    agent.close()
