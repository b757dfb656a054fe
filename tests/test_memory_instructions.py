"""The memory's own instructions for its functions travel in the context the Memory compiles
(issue 19, item 2): a one-line system prompt, as the README's own-loop example sends, is
enough for the model to learn what its memory functions are for."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmem.kernel import MEMORY_INSTRUCTIONS, Agent, Memory, MessageError, replay
from vmem.kernel.context import INSTRUCTIONS_PAGE
from vmem.kernel.drivers import ScriptedDriver
from vmem.kernel.persistence import CORE_KEY, STATE_KEY
from vmem.storage import MemoryDir

FUNCTIONS = ("core_memory_append", "core_memory_replace", "archival_memory_insert", "archival_memory_search",
             "conversation_search", "send_message")


def test_a_new_memory_sends_its_memory_instructions_right_after_the_system_prompt(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "m", system="You are Ana's assistant.", blocks={"human": ""}) as memory:
        context = memory.compile()
        assert context[0] == {"role": "system", "content": "You are Ana's assistant."}
        assert context[1] == {"role": "system", "content": MEMORY_INSTRUCTIONS}
        assert context[2]["content"].startswith("<core_memory>")
        for name in FUNCTIONS:  # every function a model needs to keep and find facts is explained
            assert name in context[1]["content"], name
        assert memory.ctx.info(INSTRUCTIONS_PAGE).tokens == memory.counter.count(MEMORY_INSTRUCTIONS) > 0
        memory.check()
    with Memory.open(tmp_path / "m") as memory:  # stored with the memory
        assert memory.instructions == MEMORY_INSTRUCTIONS
        assert memory.compile()[1]["content"] == MEMORY_INSTRUCTIONS
        memory.check()


def test_instructions_are_configurable_and_can_be_turned_off(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "own", system="s", instructions="Save facts with core_memory_append.") as memory:
        assert memory.compile()[1] == {"role": "system", "content": "Save facts with core_memory_append."}
        memory.check()
    with Memory.create(tmp_path / "off", system="s", blocks={"human": ""}, instructions=None) as memory:
        context = memory.compile()
        assert [m["content"][:13] for m in context[:2]] == ["s", "<core_memory>"]
        assert memory.instructions == "" and memory.ctx.info(INSTRUCTIONS_PAGE).tokens == 0
        memory.check()


def test_an_agent_and_its_replay_send_the_same_instructions(tmp_path: Path) -> None:
    driver = ScriptedDriver([{"name": "send_message", "arguments": {"message": "hi"}}] * 2)
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": ""}, driver=driver)
    agent.step("hello")
    assert driver.requests[0].messages[1]["content"] == MEMORY_INSTRUCTIONS
    digest = agent.memory.digest()
    agent.close()
    again = replay(tmp_path / "a", tmp_path / "b")
    assert again.memory.digest() == digest
    again.close()


def test_a_memory_from_before_instructions_existed_reopens_without_them(tmp_path: Path) -> None:
    """A memory saved by an earlier vmem has no instructions page and no field in its state:
    it reopens with none (its context, and its prompt cache, unchanged) and every invariant holds."""
    with Memory.create(tmp_path / "m", system="s", blocks={"human": "Ana"}, instructions=None) as memory:
        memory.append({"role": "user", "content": "hello"})
        before = list(memory.compile())
    with MemoryDir.open(tmp_path / "m") as store:  # make it look as an earlier version saved it
        from vmem.kernel.persistence import load_core

        ctx, _, _ = load_core(store)
        ctx.remove(INSTRUCTIONS_PAGE)
        state = dict(store.state[STATE_KEY])
        del state["instructions"]
        with store.transaction():
            store.state[CORE_KEY] = ctx.snapshot()
            store.journal.clear()
            store.state[STATE_KEY] = state
    with Memory.open(tmp_path / "m") as memory:
        assert memory.instructions == ""
        assert list(memory.compile())[:-1] == before[:-1]  # all but the clock's statistics
        memory.check()
        memory.append({"role": "assistant", "content": "hi"})
        memory.check()
    with Memory.open(tmp_path / "m") as memory:
        memory.check()


@pytest.mark.parametrize("bad", [123, b"bytes"])
def test_instructions_that_are_not_text_are_refused(tmp_path: Path, bad: object) -> None:
    with pytest.raises(TypeError, match="instructions"):
        Memory.create(tmp_path / "m", system="s", instructions=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "m").exists()


def test_calls_a_small_model_writes_in_its_text_become_tool_calls(tmp_path: Path) -> None:
    """Qwen2.5-Coder-1.5B behind llama.cpp answered the README's loop with its calls as JSON in the
    text (in a code fence, or not), which a loop reading ``reply.tool_calls`` never ran."""
    with Memory.create(tmp_path / "m", system="s", blocks={"human": ""}) as memory:
        memory.append({"role": "user", "content": "Hi! I'm Ana, I just moved to Lisbon."})
        text = ('Saving that.\n```json\n{"name": "core_memory_append", "arguments": {"label": "human", '
                '"content": "Name: Ana. Lives in Lisbon."}}\n```')
        reply = memory.assistant_message({"role": "assistant", "content": text})
        assert reply["content"] == "Saving that."
        [call] = reply["tool_calls"]
        assert call["function"]["name"] == "core_memory_append"
        memory.append(reply)
        assert memory.execute(call).ok and memory.block("human").value == "Name: Ana. Lives in Lisbon."
        native = {"role": "assistant", "content": None, "tool_calls": [
            {"id": "n1", "type": "function", "function": {"name": "send_message", "arguments": '{"message": "Hi"}'}}]}
        assert memory.assistant_message(native) == native  # calls of its own: as they are
        prose = {"role": "assistant", "content": 'I would call {"name": "launch_rockets"} but I will not.'}
        assert memory.assistant_message(prose) == prose  # not one of the memory's functions: text
        with pytest.raises(MessageError):
            memory.assistant_message({"role": "user", "content": "hi"})
        memory.check()
