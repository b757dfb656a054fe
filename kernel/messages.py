"""Chat messages as the memory takes them: normalised, checked against the chat protocol.

What :meth:`vmem.kernel.Memory.append` accepts is an OpenAI chat message (a dict, or an
``openai`` message object): it becomes a plain dict with a string content (text content
parts joined), and assistant tool calls become OpenAI's dict shape with arguments that are
always a JSON object text (unparseable arguments are kept as ``{"unparsed": text}``), so
the stored history stays valid for any OpenAI-compatible server. The protocol is checked
against the queue: a tool result must answer the next pending call of the last assistant
message, in order, and nothing else may come while calls await their results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vmem.kernel.drivers.lenient_json import text_too_deep, too_deep
from vmem.kernel.errors import MessageError
from vmem.text import clean_text
from vmem.kernel.summary import cap_text

__all__ = ["ROLES", "check_order", "normalise", "pending_calls", "shorten"]

ROLES = ("system", "user", "assistant", "tool")


def normalise(message: Mapping[str, Any] | Any) -> dict[str, Any]:
    """A chat message as a plain dict with a str content and well-formed tool calls (MessageError if it cannot be)."""
    if not isinstance(message, Mapping):
        dump = getattr(message, "model_dump", None)
        if dump is None:
            raise MessageError(f"a message is a dict or an openai message object, not {type(message).__name__}")
        message = dump(exclude_none=True)
    role = message.get("role")
    if role not in ROLES:
        raise MessageError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    content = message.get("content")
    if isinstance(content, list):  # content parts: text only
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise MessageError("only text content parts are supported")
            texts.append(part["text"])
        content = "\n".join(texts)
    if content is None and not (role == "assistant" and message.get("tool_calls")):
        content = ""
    if content is not None and not isinstance(content, str):
        raise MessageError(f"content must be a string, got {type(content).__name__}")
    out: dict[str, Any] = {"role": role, "content": clean_text(content) if content is not None else None}
    if role == "assistant" and message.get("tool_calls"):
        out["tool_calls"] = [_normalise_call(c) for c in message["tool_calls"]]
        ids = [c["id"] for c in out["tool_calls"]]
        if len(set(ids)) != len(ids):
            raise MessageError(f"tool call ids repeat in one message: {ids}")
    if role == "tool":
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise MessageError("a tool message needs its tool_call_id")
        out["tool_call_id"] = clean_text(call_id)
        if isinstance(message.get("name"), str):
            out["name"] = clean_text(message["name"])
    return out


def _normalise_call(call: Any) -> dict[str, Any]:
    if not isinstance(call, Mapping):
        to_openai = getattr(call, "to_openai", None)  # a vmem ToolCall
        dump = getattr(call, "model_dump", None)  # an openai object
        if to_openai is not None:
            call = to_openai()
        elif dump is not None:
            call = dump()
        else:
            raise MessageError(f"a tool call is a dict or an openai tool call object, not {type(call).__name__}")
    fn = call.get("function") or {}
    call_id, name, args = call.get("id"), fn.get("name"), fn.get("arguments")
    if not isinstance(call_id, str) or not call_id:
        raise MessageError("a tool call needs an id")
    if not isinstance(name, str) or not name:
        name = "unnamed_function"
    if isinstance(args, Mapping):
        try:
            args = json.dumps(args, ensure_ascii=False) if not too_deep(args) else None
        except (TypeError, ValueError, RecursionError):
            args = None
    try:
        ok = isinstance(args, str) and not text_too_deep(args) and isinstance(json.loads(args), dict)
    except (ValueError, RecursionError):
        ok = False
    text = args if ok and isinstance(args, str) else json.dumps(
        {"unparsed": args if isinstance(args, str) else "(not JSON)"}, ensure_ascii=False)
    return {"id": clean_text(call_id), "type": "function",
            "function": {"name": clean_text(name), "arguments": clean_text(text)}}


def pending_calls(queue: Sequence[Mapping[str, Any]]) -> list[str]:
    """Ids of the last assistant message's tool calls that have no result in ``queue`` yet, in order."""
    answered = 0
    for chat in reversed(queue):
        if chat["role"] == "tool":
            answered += 1
            continue
        if chat["role"] == "assistant" and chat.get("tool_calls"):
            return [c["id"] for c in chat["tool_calls"]][answered:]
        return []
    return []


def check_order(msg: Mapping[str, Any], pending: Sequence[str]) -> None:
    """MessageError unless ``msg`` may follow a queue whose pending calls are ``pending``."""
    role = msg["role"]
    if role == "tool":
        if not pending:
            raise MessageError(f"a tool result ({msg.get('tool_call_id')!r}) without a pending tool call")
        if msg["tool_call_id"] != pending[0]:
            raise MessageError(f"tool result for {msg['tool_call_id']!r}, but the next pending call is "
                               f"{pending[0]!r} (results go right after their call, in order)")
    elif pending:
        raise MessageError(f"tool call(s) {', '.join(pending)} have no result yet: append their tool "
                           f"results (or execute() them) before a new {role} message")


def shorten(msg: Mapping[str, Any], quota: int, count: Callable[[str], int], where: int) -> dict[str, Any]:
    """A copy of an oversize message within about ``quota`` tokens, saying the whole one is page ``where``."""
    note = f" [cut: the whole message is {where:#x} in recall storage]"
    out = dict(msg)
    calls = msg.get("tool_calls") or []
    share = max(16, quota // (1 + len(calls)))
    if msg.get("content"):
        out["content"] = cap_text(msg["content"], share, count) + note
    if calls:
        out["tool_calls"] = [
            {**c, "function": {"name": c["function"]["name"],
                               "arguments": json.dumps({"cut": cap_text(c["function"]["arguments"], share, count)})}}
            if count(c["function"]["arguments"]) > share else c
            for c in calls]
    return out
