"""The text tool protocol for the OpenAI Agents SDK: a chat-completions model whose calls a small
local model wrote as JSON in its text reach the SDK as tool calls.

Small local models (Qwen2.5-Coder-1.5B on llama.cpp, measured) often answer a request that offers
tools with the right call written as text -- a fenced ``{"name": ..., "arguments": {...}}`` --
which the server's chat template does not turn into a tool call. The SDK then takes the JSON for
the final answer and never runs the tool. ``tool_choice="required"`` does not help there: llama.cpp
answered it with the same fenced text, and then newlines until ``max_tokens``.
:class:`TextToolCallsModel` is the SDK's ``OpenAIChatCompletionsModel`` with one change: an answer
that has no tool calls of its own and whose text holds calls of the tools offered to it
(:func:`vmem.kernel.drivers.toolcalls.parse_text_tool_calls`, ``only_known``: prose and calls of
unknown names stay text) is returned as those tool calls, with the text around them kept as the
message. The same reading :meth:`vmem.kernel.Memory.assistant_message` does for an own loop.

Interface::

    from agents import Agent, Runner
    from vmem.kernel.drivers.agents_sdk import TextToolCallsModel

    model = TextToolCallsModel(model="qwen1.5b", openai_client=AsyncOpenAI())
    agent = Agent(name="assistant", instructions=..., model=model, tools=[...])   # or mcp_servers=[...]
    await Runner.run(agent, "...")

Only :meth:`get_response` (``Runner.run``) reads text calls; a streamed run
(``Runner.run_streamed``) gets the text as the model wrote it. Needs ``openai-agents`` (vmem's
``test`` extra); importing this module without it raises ImportError saying so.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

try:
    from agents import OpenAIChatCompletionsModel
    from agents.items import ModelResponse
    from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("vmem.kernel.drivers.agents_sdk needs the OpenAI Agents SDK: pip install openai-agents") from exc

from .toolcalls import parse_text_tool_calls

__all__ = ["TextToolCallsModel", "text_calls_as_tool_calls"]


def _tool_names(tools: list[Any]) -> set[str]:
    """The names of the SDK's tools (function tools and those an MCP server lists)."""
    return {name for name in (getattr(t, "name", None) for t in tools) if isinstance(name, str)}


def text_calls_as_tool_calls(output: list[Any], known: set[str]) -> list[Any]:
    """``output`` (a ModelResponse's items) with calls of the tools in ``known`` that the model wrote
    in its message text made function-call items. Unchanged when the answer already has a tool
    call, offers no tools, or its text holds no such call."""
    if not known or any(isinstance(item, ResponseFunctionToolCall) for item in output):
        return output
    result: list[Any] = []
    for item in output:
        if not isinstance(item, ResponseOutputMessage):
            result.append(item)
            continue
        calls: list[ResponseFunctionToolCall] = []
        content: list[Any] = []
        for part in item.content:
            if not isinstance(part, ResponseOutputText):
                content.append(part)
                continue
            found = parse_text_tool_calls(part.text, known=known, only_known=True)
            usable = [c for c in found.calls if c.arguments is not None]
            if not usable:
                content.append(part)
                continue
            calls += [ResponseFunctionToolCall(type="function_call", call_id=c.id, name=c.name,
                                               arguments=json.dumps(c.arguments, ensure_ascii=False))
                      for c in usable]
            if found.text:
                content.append(part.model_copy(update={"text": found.text}))
        if content:
            result.append(item.model_copy(update={"content": content}))
        result += calls
    return result


class TextToolCallsModel(OpenAIChatCompletionsModel):
    """``OpenAIChatCompletionsModel`` that reads calls of its tools written as JSON in the answer's
    text as tool calls (see the module's docstring)."""

    async def get_response(self, system_instructions: Any, input: Any, model_settings: Any,  # noqa: A002
                           tools: list[Any], output_schema: Any, handoffs: list[Any], tracing: Any,
                           *args: Any, **kwargs: Any) -> ModelResponse:
        response = await super().get_response(system_instructions, input, model_settings, tools, output_schema,
                                              handoffs, tracing, *args, **kwargs)
        known = _tool_names(tools) | {name for name in (getattr(h, "tool_name", None) for h in handoffs)
                                      if isinstance(name, str)}
        output = text_calls_as_tool_calls(list(response.output), known)
        return response if output == list(response.output) else dataclasses.replace(response, output=output)
