"""One writer, enforced in the process (issue 18, item 4): a public Memory call made while a step
or another call runs in another thread (or asyncio task) is answered with BusyError, never
interleaved. Thread switches are forced (``sys.setswitchinterval(1e-5)``) so that the threads
meet inside the kernel's transactions.
"""

from __future__ import annotations

import asyncio
import sys
import threading

import pytest

from vmem.kernel import Agent, BusyError, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall


def chatty(messages, tools):
    if not tools:
        return Completion(text="a summary")
    n = len(messages)
    return Completion(tool_calls=[ToolCall(f"a{n}", "archival_memory_insert", {"content": f"step fact {n}"}),
                                  ToolCall(f"s{n}", "send_message", {"message": f"ok {n}"})])


@pytest.fixture
def fast_switches():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(old)


@pytest.mark.parametrize("run", range(3))
def test_a_step_and_an_insert_in_two_threads_never_interleave(tmp_path, fast_switches, run):
    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(chatty), blocks={"human": ""},
                         config=MemoryConfig(window=4096, reserve_output=256, prefetch=1), durability="normal")
    memory = agent.memory
    stop = threading.Event()
    outcome = {"inserted": 0, "busy": 0, "steps": 0, "step_busy": 0, "errors": []}

    def stepper():
        try:
            for i in range(300):
                try:
                    agent.step(f"message {i} " + "words " * 5)
                    outcome["steps"] += 1
                except BusyError:
                    outcome["step_busy"] += 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome["errors"].append(repr(exc))
        finally:
            stop.set()

    def inserter():
        k = 0
        while not stop.is_set():
            k += 1
            try:
                memory.archival_insert(f"side fact {run}-{k} " + "more words " * 20)
                outcome["inserted"] += 1
            except BusyError:
                outcome["busy"] += 1
            except BaseException as exc:  # noqa: BLE001
                outcome["errors"].append(repr(exc))
                return
            if k % 5 == 0:
                try:  # reads too: a consistent answer or BusyError
                    memory.conversation_search("message")
                    memory.compile()
                except BusyError:
                    pass
                except BaseException as exc:  # noqa: BLE001
                    outcome["errors"].append(repr(exc))
                    return

    threads = [threading.Thread(target=stepper), threading.Thread(target=inserter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not outcome["errors"], outcome["errors"]
    memory.check()
    found = memory.archival_search("side fact", page=0)
    assert found.total >= outcome["inserted"] > 0 or outcome["busy"] > 0
    agent.step("a normal step afterwards")
    digest = memory.digest()
    agent.close()
    with Memory.open(tmp_path / "a") as again:
        again.check()
        assert again.digest() == digest


def test_a_call_from_another_thread_during_a_step_gets_busy(tmp_path):
    entered, release = threading.Event(), threading.Event()

    def slow(messages, tools):
        if tools:
            entered.set()
            release.wait(30)
        return Completion(tool_calls=[ToolCall(f"s{len(messages)}", "send_message", {"message": "ok"})])

    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(slow), blocks={"human": ""},
                         config=MemoryConfig(window=4096, reserve_output=256))
    t = threading.Thread(target=agent.step, args=("hi",))
    t.start()
    assert entered.wait(30)
    memory = agent.memory
    for call in (lambda: memory.archival_insert("x"), lambda: memory.compile(), lambda: memory.check(),
                 lambda: memory.conversation_search("hi"), lambda: memory.set_block("human", "y"),
                 lambda: memory.append({"role": "user", "content": "interleaved"}), lambda: memory.close(),
                 lambda: agent.step("a second step")):
        with pytest.raises(BusyError):
            call()
    release.set()
    t.join(30)
    memory.check()
    agent.step("now it is free")
    agent.close()


def test_two_tasks_on_one_memory(tmp_path):
    async def main():
        gate = asyncio.Event()

        class Slow(ScriptedDriver):
            async def acomplete(self, messages, tools):
                await gate.wait()
                return self.complete(messages, tools)

        agent = Agent.create(tmp_path / "a", system="s", driver=Slow(chatty), blocks={"human": ""},
                             config=MemoryConfig(window=4096, reserve_output=256))
        task = asyncio.create_task(agent.astep("hi"))
        await asyncio.sleep(0.05)
        with pytest.raises(BusyError):
            agent.memory.archival_insert("from another task")
        with pytest.raises(BusyError):
            agent.memory.compile()
        gate.set()
        await task
        agent.memory.check()
        agent.memory.archival_insert("after the step")
        agent.close()
    asyncio.run(main())
