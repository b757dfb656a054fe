"""Every request gets an answer (issue 18, item 8): tool arguments nested beyond
``MAX_DEPTH``, invalid Unicode and any exception in parsing are function errors in a step
(nothing escapes ``Agent.step``; the trace's packer copes), and JSON-RPC errors over MCP.
"""

from __future__ import annotations

import json
import sys

import pytest

from fake_openai_server import FakeOpenAIServer, Reply
from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, OpenAIDriver, ScriptedDriver, ToolCall
from vmem.kernel.drivers.toolcalls import MAX_DEPTH, parse_arguments

CONFIG = MemoryConfig(window=8192, reserve_output=512)


def nested_text(depth: int, open_: str = "[", close: str = "]") -> str:
    return '{"content": ' + open_ * depth + close * depth + "}"


def nested_dict(depth: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(depth):
        d = {"k": d}
    return d


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 5_000, 100_000])
def test_arguments_nested_deeper_than_the_limit_are_a_function_error(depth):
    parsed = parse_arguments(nested_text(depth))
    assert parsed.arguments is None and f"nested more than {MAX_DEPTH}" in parsed.error


def test_arguments_within_the_limit_parse():
    parsed = parse_arguments(nested_text(MAX_DEPTH - 2))
    assert parsed.arguments is not None


@pytest.mark.parametrize("arguments", [
    nested_text(100_000), nested_text(100_000, "{\"a\":", "}"), '{"content": "\\ud800 lone"}',
    '{"content": "\\udc00\\ud800"}', '{"content": "' + "\\\\" * 10 + '"}', "\ud800", '{"a": 1e999999}',
    '{"a": ' + "9" * 10_000 + "}",
])
def test_hostile_arguments_from_an_openai_server_are_function_errors(tmp_path, arguments):
    with FakeOpenAIServer() as server:
        server.push(Reply.tool_calls(("archival_memory_insert", arguments), ("send_message", {"message": "x"}, "c2")))
        server.push(Reply.tool_calls(("send_message", {"message": "done"})))
        driver = OpenAIDriver(model="m", base_url=server.base_url, api_key="k")
        agent = Agent.create(tmp_path / "a", system="s", driver=driver, config=CONFIG)
        result = agent.step("hi")  # never raises
        assert result.steps >= 1
        agent.close()
    with Memory.open(tmp_path / "a") as memory:
        memory.check()


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 5_000, 50_000])
def test_a_driver_handing_over_a_deeply_nested_dict_gets_a_function_error(tmp_path, depth):
    calls = [[ToolCall("c1", "archival_memory_insert", {"content": "x", "tags": nested_dict(depth)})],
             [ToolCall("c2", "core_memory_append", {"label": "human", "content": nested_dict(depth)})]]

    def answer(messages, tools):
        if calls:
            return Completion(tool_calls=calls.pop(0))
        return Completion(tool_calls=[ToolCall("s", "send_message", {"message": "done"})])

    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(answer), blocks={"human": ""},
                         config=CONFIG)
    result = agent.step("hi")
    assert [c.ok for c in result.calls][:2] == [False, False]
    assert all("nested" in c.result for c in result.calls[:2])
    agent.close()
    with Memory.open(tmp_path / "a") as memory:  # the trace holds what happened
        memory.check()


def test_a_completion_text_with_lone_surrogates_and_deep_nesting_is_stored(tmp_path):
    texts = ["\ud800\udfff\ud800 text", "[" * 30_000 + "]" * 30_000]

    def answer(messages, tools):
        return Completion(text=texts.pop(0) if texts else "ok")

    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(answer), config=CONFIG)
    agent.step("\udfff user text")
    agent.step("again")
    agent.close()
