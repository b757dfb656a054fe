"""The OpenAI Agents SDK with vmem's memory over MCP: facts told in one run, recalled in the next.

Each run is a new process and a new conversation: all the agent knows of earlier runs is what it
saved through the memory tools that ``vmem mcp DIR`` serves (core memory blocks, archival passages)
and what it finds again with them. The core memory blocks (the server's resources) go into the
agent's instructions at the start of each run, as a vmem agent has them in its context.

    export OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=none VMEM_MODEL=qwen2.5-coder-1.5b
    python examples/agents_sdk_mcp.py ana-memory "Please remember: my bike lock code is 4812."
    python examples/agents_sdk_mcp.py ana-memory "What is my bike lock code?"

Needs ``pip install openai-agents`` (in vmem's ``test`` extra). Any OpenAI-compatible server serves
the model (llama.cpp, vLLM, Ollama, OpenAI); tracing to OpenAI is off. The model is the SDK's
chat-completions model with one change (``vmem.kernel.drivers.agents_sdk.TextToolCallsModel``): a call
of the memory's tools that a small local model writes as JSON in its text (Qwen2.5-Coder-1.5B on
llama.cpp does) is run as a tool call, instead of being taken for the answer.
"""

from __future__ import annotations

import asyncio
import os
import sys

from agents import Agent, Runner, set_tracing_disabled
from agents.mcp import MCPServerStdio
from openai import AsyncOpenAI

from vmem.kernel.drivers.agents_sdk import TextToolCallsModel

#: What the agent does with its memory, with one worked example: a small model (Qwen2.5-Coder-1.5B)
#: answered a question its core memory held by calling a tool again until the example showed it an answer.
INSTRUCTIONS = (
    "You are a helpful assistant with a long-term memory, reached through your tools.\n"
    "- When the user tells you a new fact worth keeping, save it with core_memory_append (label \"human\").\n"
    "- When the user asks a question and your core memory below holds the answer, answer it at once in one "
    "sentence, without calling any tool.\n"
    "- When it does not, search with archival_memory_search and conversation_search, then answer.\n"
    "For example, when your core memory holds \"My sister is called Eva.\":\n"
    "User: What is my sister's name?\n"
    "Assistant: Your sister is called Eva."
)


async def core_memory(server: MCPServerStdio) -> str:
    """The memory's core blocks, read through the server's resources (``vmem://blocks/LABEL``): what the
    agent always has in its context, as in MemGPT, so a fact saved there needs no search."""
    blocks = []
    for resource in (await server.list_resources()).resources:
        read = await server.read_resource(str(resource.uri))
        text = "".join(getattr(part, "text", "") for part in read.contents)
        blocks.append(f"<{resource.name}>\n{text}\n</{resource.name}>")
    return "Your core memory:\n<core_memory>\n" + "\n".join(blocks) + "\n</core_memory>"


async def run(directory: str, message: str) -> str:
    set_tracing_disabled(True)  # the SDK would otherwise send traces to OpenAI
    client = AsyncOpenAI()  # OPENAI_BASE_URL and OPENAI_API_KEY say which server
    model = TextToolCallsModel(model=os.environ.get("VMEM_MODEL", "gpt-4o-mini"), openai_client=client)
    memory = MCPServerStdio(
        {"command": sys.executable, "args": ["-m", "vmem.app.cli", "mcp", directory]},
        name="vmem", cache_tools_list=True, client_session_timeout_seconds=120,
    )
    async with memory:
        instructions = INSTRUCTIONS + "\n\n" + await core_memory(memory)
        agent = Agent(name="assistant", instructions=instructions, model=model, mcp_servers=[memory])
        result = await Runner.run(agent, message, max_turns=6)
    return str(result.final_output)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: agents_sdk_mcp.py DIR MESSAGE")
    print(asyncio.run(run(sys.argv[1], sys.argv[2])))
