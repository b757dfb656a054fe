"""No operation the kernel accepts wedges an agent (issue 18, items 1-3): after any model answer,
any import and any configuration accepted, the next step runs.

- One answer with 100+ tool calls: calls beyond ``StepRules.max_calls_per_answer`` are refused,
  the answer's group stays bounded (results that do not fit go to recall storage with a note).
- A Letta agent file whose in-context history exceeds the window: what does not fit is folded
  into recall storage and the summary at import.
- A window too small to work is refused at create, with the minimum in the message.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from vmem.app.letta_bridge import import_agent_file
from vmem.kernel import Agent, ContextWindowError, Memory, MemoryConfig, StepRules
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall
from vmem.kernel.drivers.lenient_json import parse_arguments

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.timezone.utc)


def looping_driver(calls: int, name: str = "archival_memory_insert", size: int = 8):
    """A model that answers the first step with ``calls`` tool calls in one answer, then behaves."""
    state = {"first": True}

    def answer(messages, tools):
        if not tools:
            return Completion(text="a summary")
        if state["first"]:
            state["first"] = False
            return Completion(tool_calls=[ToolCall(f"c{i}", name, {"content": f"fact {i} " + "word " * size})
                                          for i in range(calls)])
        return Completion(tool_calls=[ToolCall(f"s{len(messages)}", "send_message", {"message": "ok"})])
    return ScriptedDriver(answer)


@pytest.mark.parametrize("calls", [50, 100, 300])
def test_an_answer_with_hundreds_of_tool_calls_does_not_wedge_the_agent(tmp_path, calls):
    agent = Agent.create(tmp_path / "a", system="You are under test.", driver=looping_driver(calls),
                         blocks={"human": ""}, config=MemoryConfig(window=4096, reserve_output=256))
    first = agent.step("save everything")
    for i in range(6):  # every later step runs
        agent.step(f"and now {i}")
    agent.close()
    agent = Agent.open(tmp_path / "a", driver=looping_driver(0))
    agent.step("after reopening")
    agent.close()
    cap = agent.rules.max_calls_per_answer
    assert len([c for c in first.calls if c.ok]) <= cap
    assert first.stopped == ("call_cap" if calls > cap else "done")


def test_results_that_do_not_fit_beside_their_answer_go_to_recall_with_a_note(tmp_path):
    def report(topic: str) -> str:
        """A long report on a topic.

        Args:
            topic: what about.
        """
        return f"{topic}: " + "a fairly long line of text for the report " * 90

    def answer(messages, tools):
        if not tools:
            return Completion(text="a summary")
        if not any(m["role"] == "tool" for m in messages):
            return Completion(tool_calls=[ToolCall(f"c{i}", "report", {"topic": f"t{i}"}) for i in range(8)])
        return Completion(tool_calls=[ToolCall(f"s{len(messages)}", "send_message", {"message": "ok"})])

    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(answer), functions=[report],
                         config=MemoryConfig(window=4096, reserve_output=256))
    agent.step("report on everything")
    agent.step("next")
    agent.step("and next")
    memory = agent.memory
    notes = [m for m in memory.queue.messages if m["role"] == "tool" and "recall storage" in m["content"]]
    stored = [m for m in memory.store.recall.get_many(memory.queue.pages()) if m.meta.get("kind") == "shortened"]
    assert len(stored) == len(notes) > 0  # each note points at the whole result, kept in recall storage
    agent.close()


def test_a_memory_refuses_an_assistant_message_with_too_many_calls(tmp_path):
    from vmem.kernel import MessageError
    with Memory.create(tmp_path / "m", system="s") as memory:
        memory.append({"role": "user", "content": "hi"})
        calls = [{"id": f"c{i}", "type": "function", "function": {"name": "send_message", "arguments": "{}"}}
                 for i in range(memory.config.max_calls + 1)]
        with pytest.raises(MessageError, match="at most"):
            memory.append({"role": "assistant", "content": None, "tool_calls": calls})
        memory.check()


# ---------------------------------------------------------------- item 2: imported history over the window


def letta_file(tmp_path: Path, n: int, window: int = 8000) -> Path:
    messages = [{"id": "message-0", "role": "system", "content": [{"type": "text", "text": "You are Sam."}],
                 "created_at": T0.isoformat()}]
    for i in range(1, n + 1):
        role = "user" if i % 2 else "assistant"
        messages.append({"id": f"message-{i}", "role": role,
                         "content": [{"type": "text", "text": f"message {i}: " + "some words here " * 6}],
                         "created_at": (T0 + dt.timedelta(minutes=i)).isoformat()})
    agent = {"id": "agent-0", "name": "sam", "system": "You are Sam.", "agent_type": "memgpt_agent",
             "llm_config": {"model": "m", "context_window": window}, "block_ids": [], "tool_ids": [],
             "messages": messages, "in_context_message_ids": [m["id"] for m in messages]}
    doc = {"agents": [agent], "groups": [], "files": [], "sources": [], "mcp_servers": [], "blocks": [],
           "tools": [], "metadata": {}, "created_at": T0.isoformat()}
    path = tmp_path / "big.af"
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("n", [300, 2000])
def test_an_imported_history_larger_than_the_window_is_folded_at_import(tmp_path, n):
    res = import_agent_file(letta_file(tmp_path, n), tmp_path / "sam")
    target = res.directories["agent-0"]
    driver = looping_driver(0)
    with Memory.open(target) as memory:
        memory.check()
        assert memory.stats.recall == n  # every message kept, verbatim, in recall storage
        assert memory.ctx.status().used <= memory.ctx.config.budget
        assert memory.evicted > 0 and memory.summary
    agent = Agent.open(target, driver=driver)
    agent.step("do you remember?")
    agent.step("and again")
    agent.close()


# ---------------------------------------------------------------- item 3: a window too small


def test_a_window_too_small_to_work_is_refused_at_create_with_the_minimum(tmp_path):
    with pytest.raises(ContextWindowError, match=r"at least \d+ tokens"):
        Memory.create(tmp_path / "m", system="You are under test.", config=MemoryConfig(window=3000))
    assert not (tmp_path / "m").exists()


def test_the_smallest_window_create_accepts_can_step(tmp_path):
    with pytest.raises(ContextWindowError) as info:
        Memory.create(tmp_path / "m", system="You are under test.", blocks={"human": ""},
                      config=MemoryConfig(window=2200, reserve_output=200))
    minimum = int(str(info.value).split("at least ")[1].split(" tokens")[0])
    agent = Agent.create(tmp_path / "a", system="You are under test.", driver=looping_driver(40),
                         blocks={"human": ""}, config=MemoryConfig(window=minimum, reserve_output=200))
    for i in range(8):
        agent.step(f"message {i} " + "with some words " * 10)
    agent.close()


def test_a_block_that_would_leave_too_little_room_is_refused(tmp_path):
    from vmem.kernel.pressure import MIN_QUEUE
    with Memory.create(tmp_path / "m", system="s", config=MemoryConfig(window=4096, reserve_output=256)) as memory:
        room = memory.pressure.room()
        with pytest.raises(ContextWindowError, match=f"at least {MIN_QUEUE}"):
            memory.add_block("notes", "word " * (room - 300), limit=10 * room)
        assert memory.block_labels() == []
        memory.add_block("notes", "a few words", limit=10 * room)
        with pytest.raises(ContextWindowError, match=f"at least {MIN_QUEUE}"):
            memory.set_block("notes", "word " * (room - 300))
        memory.check()


def test_an_answer_that_fills_the_queue_beside_a_full_working_set_does_not_wedge(tmp_path):
    """Found by the slow hostile run (10,000 rules): at the smallest windows a prefetched working set
    and one answer's group (4 calls with 200-character ids, each result a note) left a flush no
    queue message to evict that would make room: every later step raised ContextWindowError. The
    working set is a cache of search hits, so it now goes before the step fails."""
    script: list[Completion] = []

    def answer(messages, tools):
        if not tools:
            return Completion(text="a summary")
        if script:
            return script.pop(0)
        return Completion(tool_calls=[ToolCall(f"end{len(messages)}", "send_message", {"message": "ok"})])

    agent = Agent.create(tmp_path / "a", system="You are under test.", driver=ScriptedDriver(answer),
                         blocks={"human": {"value": "", "limit": 3000}, "persona": "calm"},
                         config=MemoryConfig(window=3584, reserve_output=256, keep_last=3, prefetch=1))
    def many(n, name):
        return Completion(tool_calls=[ToolCall(f"m{i}", name, {"content": f"fact {i}", "label": "human",
                                                                 "query": "fact", "message": "fact"}) for i in range(n)])

    def normal() -> None:  # the state machine's check after every rule: a normal step
        script.clear()
        agent.memory.check()
        agent.step("a normal message")

    normal()
    script[:] = [many(251, "send_message "), Completion(tool_calls=[
        ToolCall("c9991", "send_message", None, "the arguments contain no JSON object", raw_arguments="\u00d4-\x14"),
        ToolCall("c0", "send_message", {"label": "human", "content": ""}),
        ToolCall("dup", "send_message", {"^\x07\u00c4": False, "\x1d\x88$": [34995, -121501, 4747909]}),
        ToolCall("c0", "send_message", {}, None, raw_arguments="{")]), many(238, "send_message")]
    agent.step("")
    normal()
    memory = agent.memory
    for call in (lambda: memory.set_block("human", ""), lambda: memory.add_block("bhuman", "", limit=20),
                 lambda: memory.update_block("human", limit=20), lambda: memory.archival_insert("x"),
                 lambda: memory.conversation_search("", page=10**30), lambda: memory.archival_search("", page=10**30)):
        try:
            call()
        except ValueError:
            pass
    normal()
    blah = "blah " * 40000
    raw = '{"query": "' + blah[:20000]
    truncated = parse_arguments(raw)
    script[:] = [
        Completion(tool_calls=[ToolCall("c297", "conversation_search", {"message": "o=", "request_heartbeat": False})]),
        Completion(tool_calls=[
            ToolCall("x" * 200, "core_memory_append", truncated.arguments, truncated.error, raw_arguments=raw),
            ToolCall("c499497", "", {"new_content": "\x00\ud800 zero", "old_content": "\x00\ud800 zero", "label": "nope"}),
            ToolCall("c4654682", "teleport", {"content": blah, "label": "human", "request_heartbeat": -1.33e259}),
            ToolCall("c1487", "conversation_search", None, "invalid JSON",
                     raw_arguments='{"label": "human", "content": "\\u00f0\\u00df S'),
        ]),
        Completion(text=""),
    ]
    agent.step("?\u00e4\u00bd\x19\U000d3572\U000ca57a\u00c1\u00ec")
    agent.memory.check()
    assert agent.step("a normal message").replies == ["ok"]
    agent.memory.check()
    agent.close()
