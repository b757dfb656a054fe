"""LLM drivers: turn a compiled context (messages + tool schemas) into a Completion.

Public API::

    Driver                      base class: complete(messages, tools) / acomplete(...)
    Completion, ToolCall, Usage the result types (to_dict/from_dict for traces)
    DriverError, ContextOverflowError, DriverTimeoutError, ScriptExhausted, ReplayMismatch
    OpenAIDriver, RetryPolicy   any /v1/chat/completions server (imported lazily: the
                                ``openai`` package loads only when first used)
    ScriptedDriver              scripted completions for tests and offline runs
    ReplayDriver, RecordingDriver, request_digest
    parse_arguments             lenient JSON: a tool call's arguments text (.lenient_json)
    parse_text_tool_calls, tool_protocol_prompt, to_text_protocol   the text tool protocol (.toolcalls)

See :mod:`vmem.kernel.drivers.base` for the exception tree and how to write a driver.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    Completion,
    ContextOverflowError,
    Driver,
    DriverError,
    DriverTimeoutError,
    Message,
    ReplayMismatch,
    ScriptExhausted,
    Tool,
    ToolCall,
    Usage,
)
from .replay import RecordingDriver, ReplayDriver, request_digest
from .scripted import ScriptedDriver
from .lenient_json import parse_arguments
from .toolcalls import parse_text_tool_calls, to_text_protocol, tool_protocol_prompt

if TYPE_CHECKING:
    from .openai import OpenAIDriver, RetryEvent, RetryPolicy

__all__ = [
    "Completion",
    "ContextOverflowError",
    "Driver",
    "DriverError",
    "DriverTimeoutError",
    "Message",
    "OpenAIDriver",
    "RecordingDriver",
    "ReplayDriver",
    "ReplayMismatch",
    "RetryEvent",
    "RetryPolicy",
    "ScriptExhausted",
    "ScriptedDriver",
    "Tool",
    "ToolCall",
    "Usage",
    "parse_arguments",
    "parse_text_tool_calls",
    "request_digest",
    "to_text_protocol",
    "tool_protocol_prompt",
]

_LAZY = {"OpenAIDriver", "RetryEvent", "RetryPolicy"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import openai as _openai

        return getattr(_openai, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
