"""The OpenAI Agents SDK with a vmem ``Memory`` as its tools, in process (no MCP server).

The SDK runs the conversation; vmem keeps the memory across runs. Each run: the user's message
goes to the memory, the memory compiles its prompt (system, how to use the memory, the core
memory blocks, the summary of older turns; flushing through the model when the window fills),
the SDK calls the memory functions as tools, and the answer is recorded. What the agent said and
heard stays searchable (conversation_search) in later runs.

    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none VMEM_MODEL=qwen2.5-coder-1.5b
    python examples/agents_sdk_memory.py ana-memory "Hi! I'm Ana and I just moved to Lisbon."
    python examples/agents_sdk_memory.py ana-memory "Where do I live?"

Needs ``pip install openai-agents`` (in vmem's ``test`` extra). ``TextToolCallsModel`` is the SDK's
chat-completions model that also runs the calls a small local model writes as JSON in its text.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

from agents import Agent, FunctionTool, Runner, set_tracing_disabled
from openai import AsyncOpenAI, OpenAI

from vmem.kernel import Memory
from vmem.kernel.drivers.agents_sdk import TextToolCallsModel

MODEL = os.environ.get("VMEM_MODEL", "gpt-4o-mini")
SYSTEM = "You are a helpful assistant who remembers what the user tells you."
#: How to use the memory, for this loop: the SDK's answer is the reply, so there is no send_message.
INSTRUCTIONS = (
    "<memory_instructions>\nYour memory outlives this conversation, but only what you save in it is remembered.\n"
    "- Core memory (the <core_memory> blocks) is always in your context. Whenever the user tells you something "
    "about themselves, save it at once: call core_memory_append with label \"human\" and the fact as content.\n"
    "- archival_memory_insert saves anything else worth keeping; archival_memory_search finds it again.\n"
    "- conversation_search finds what was said in earlier conversations.\n"
    "- Before you answer a question whose answer is not in your context, search your memory.\n"
    "</memory_instructions>"
)


def open_memory(directory: str) -> Memory:
    if Memory.exists(directory):
        return Memory.open(directory)
    return Memory.create(directory, system=SYSTEM, instructions=INSTRUCTIONS,
                         blocks={"human": "", "persona": "I am concise and kind."})


def memory_tools(memory: Memory) -> list[FunctionTool]:
    """Each memory function (send_message aside) as an SDK tool; a call is recorded in the memory
    (the model's call, then its result), so later runs can search it."""
    tools = []
    for schema in memory.tools:
        fn = schema["function"]
        if fn["name"] == "send_message":
            continue
        params = json.loads(json.dumps(fn["parameters"]))
        params["properties"].pop("request_heartbeat", None)  # the SDK's loop decides when to go on
        params["required"] = [p for p in params.get("required", []) if p != "request_heartbeat"]

        async def invoke(ctx: Any, arguments: str, name: str = fn["name"]) -> str:
            call = {"id": ctx.tool_call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
            memory.append({"role": "assistant", "content": None, "tool_calls": [call]})
            return memory.execute(call).result  # a bad call comes back as a failed result, never raises

        tools.append(FunctionTool(name=fn["name"], description=fn["description"], params_json_schema=params,
                                  on_invoke_tool=invoke, strict_json_schema=False))
    return tools


async def run(directory: str, message: str) -> str:
    set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI
    sync_client = OpenAI()  # for the memory's summaries, when a flush needs one

    def summarize(messages: list[dict[str, Any]]) -> str:
        return sync_client.chat.completions.create(model=MODEL, messages=messages).choices[0].message.content or ""

    memory = open_memory(directory)
    try:
        memory.append({"role": "user", "content": message})
        context = memory.context(summarizer=summarize)
        prompt = []
        for m in context:  # the memory's system part: system, instructions, core memory, summary
            if m["role"] != "system":
                break
            prompt.append(m["content"])
        model = TextToolCallsModel(model=MODEL, openai_client=AsyncOpenAI())
        agent = Agent(name="assistant", instructions="\n\n".join(prompt), model=model, tools=memory_tools(memory))
        result = await Runner.run(agent, message, max_turns=6)
        answer = str(result.final_output)
        memory.append({"role": "assistant", "content": answer})
        memory.check()
        return answer
    finally:
        memory.close()


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: agents_sdk_memory.py DIR MESSAGE")
    print(asyncio.run(run(sys.argv[1], sys.argv[2])))
