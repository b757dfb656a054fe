"""The OpenAI Agents SDK over a model that writes its tool calls as JSON text (Qwen2.5-Coder-1.5B on
llama.cpp does): with the SDK's own chat-completions model the JSON is taken for the answer and the
tool never runs; with vmem.kernel.drivers.agents_sdk.TextToolCallsModel the call is run and the
model's next answer is the result. A scripted loopback server plays the model."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

agents = pytest.importorskip("agents", reason="openai-agents is not installed (it is in the test extra)")

from agents import Agent, FunctionTool, OpenAIChatCompletionsModel, Runner, set_tracing_disabled  # noqa: E402
from fake_openai_server import FakeOpenAIServer, Reply  # noqa: E402
from openai import AsyncOpenAI  # noqa: E402

from vmem.kernel.drivers.agents_sdk import TextToolCallsModel  # noqa: E402

FENCED = ('```json\n{\n  "name": "archival_memory_search",\n  "arguments": {\n    "query": "bike lock code"\n'
          '  }\n}\n```')


def run_agent(server: FakeOpenAIServer, model_class: type, message: str) -> tuple[str, list[dict[str, Any]]]:
    """Run one SDK agent with one tool over ``server``; its final output and the tool's calls."""
    set_tracing_disabled(True)
    ran: list[dict[str, Any]] = []

    async def search(ctx: Any, arguments: str) -> str:
        ran.append(json.loads(arguments))
        return "1 passage: my bike lock code is 4812"

    tool = FunctionTool(name="archival_memory_search", description="Search long-term memory.",
                        params_json_schema={"type": "object", "properties": {"query": {"type": "string"}},
                                            "required": ["query"]},
                        on_invoke_tool=search, strict_json_schema=False)

    async def main() -> str:
        client = AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        model = model_class(model="fake-model", openai_client=client)
        agent = Agent(name="assistant", instructions="Answer from memory.", model=model, tools=[tool])
        result = await Runner.run(agent, message, max_turns=4)
        await client.close()
        return str(result.final_output)

    return asyncio.run(main()), ran


def test_the_sdks_own_model_takes_a_call_written_as_text_for_the_answer() -> None:
    """The failure, as the SDK's own chat-completions model has it (what Qwen 1.5B met)."""
    with FakeOpenAIServer() as server:
        server.push(Reply.text(FENCED))
        answer, ran = run_agent(server, OpenAIChatCompletionsModel, "What is my bike lock code?")
    assert ran == [] and answer == FENCED


def test_a_call_written_as_text_is_run_and_the_model_answers_from_its_result() -> None:
    with FakeOpenAIServer() as server:
        server.push(Reply.text("Let me look.\n" + FENCED), Reply.text("Your bike lock code is 4812."))
        answer, ran = run_agent(server, TextToolCallsModel, "What is my bike lock code?")
        second = server.chat_requests[1].messages
    assert ran == [{"query": "bike lock code"}]
    assert answer == "Your bike lock code is 4812."
    calls = [m for m in second if m["role"] == "assistant" and m.get("tool_calls")]
    assert [c["function"]["name"] for c in calls[0]["tool_calls"]] == ["archival_memory_search"]
    assert any(m["role"] == "tool" and "4812" in m["content"] for m in second)


@pytest.mark.parametrize("text", [
    '```json\n{"name": "send_email", "arguments": {"to": "ana"}}\n```',  # a tool not offered
    'The JSON for it would be {"query": "bike"}.',  # prose holding JSON that is no call
    "Your bike lock code is 4812.",
])
def test_text_that_calls_no_offered_tool_stays_the_answer(text: str) -> None:
    with FakeOpenAIServer() as server:
        server.push(Reply.text(text))
        answer, ran = run_agent(server, TextToolCallsModel, "What is my bike lock code?")
    assert ran == [] and answer == text


def test_native_tool_calls_pass_through_unchanged() -> None:
    with FakeOpenAIServer() as server:
        server.push(Reply.tool_calls(("archival_memory_search", {"query": "lock"}), content=FENCED),
                    Reply.text("4812."))
        answer, ran = run_agent(server, TextToolCallsModel, "What is my bike lock code?")
    assert ran == [{"query": "lock"}] and answer == "4812."
