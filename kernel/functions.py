"""Memory functions: what the LLM may call, their JSON schemas, and argument checking.

A memory function is a plain Python function with type hints and a docstring
in Google style (a summary, then ``Args:``). Its tool schema is generated from
both. The first parameter may be ``memory``: the :class:`vmem.kernel.Memory` the call
runs in is passed there (see :class:`vmem.kernel.host.Host` for what the built-ins use)
and it is not part of the schema. Every function also takes ``request_heartbeat``
(chain another step after this one), handled by the kernel. Register your own with
:func:`memory_function`::

    @memory_function
    def roll_dice(sides: int = 6) -> str:
        \"\"\"Roll a die.

        Args:
            sides: how many sides the die has.
        \"\"\"
        return str(random.randint(1, sides))

A function signals a problem the LLM can fix by raising :class:`FunctionError`. Any
other exception it raises (a bug, a network error) is answered to the LLM as a failed
call too, never raised to the caller, and whatever the call changed is undone.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import json
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Sequence

from vmem.errors import VmemError
from vmem.kernel.drivers.base import ToolCall
from vmem.kernel.drivers.toolcalls import parse_arguments

__all__ = [
    "CallRecord",
    "FunctionError",
    "MemoryFunction",
    "memory_function",
    "HEARTBEAT",
    "as_tool_call",
    "check_arguments",
    "invoke",
]

HEARTBEAT = "request_heartbeat"
_HEARTBEAT_SCHEMA = {
    "type": "boolean",
    "description": "Request an immediate heartbeat after this call: set it to true to chain "
                   "another step (to use the result, or to call another function).",
}


class FunctionError(Exception):
    """A memory function failed in a way the LLM can act on (answered as a function error)."""


@dataclass(frozen=True)
class MemoryFunction:
    """A function the LLM may call: the callable, its name and its tool schema."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]
    wants_memory: bool  #: the first parameter is ``memory``: the Memory is passed there

    @property
    def tool(self) -> dict[str, Any]:
        """The OpenAI tool schema."""
        return {"type": "function", "function": self.schema}


def _json_type(hint: Any) -> tuple[dict[str, Any], bool]:
    """JSON Schema for a type hint, and whether None is allowed."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        schema, _ = _json_type(non_none[0]) if len(non_none) == 1 else ({}, False)
        return schema, type(None) in args
    if origin is Literal:
        return {"type": "string" if all(isinstance(a, str) for a in args) else "integer", "enum": list(args)}, False
    if origin in (list, Sequence, tuple) or hint in (list, tuple):
        item = _json_type(args[0])[0] if args else {}
        return {"type": "array", "items": item}, False
    simple = {str: "string", int: "integer", float: "number", bool: "boolean", dict: "object",
              _dt.date: "string", _dt.datetime: "string"}
    if hint in simple:
        schema = {"type": simple[hint]}
        if hint in (_dt.date, _dt.datetime):
            schema["format"] = "date"
        return schema, False
    if hint is Any or hint is inspect.Parameter.empty:
        return {}, False
    raise TypeError(f"memory functions take JSON types; cannot describe {hint!r}")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The summary (text before ``Args:``) and each argument's description."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"^\s*(?:Args|Arguments|Parameters):\s*$", doc, maxsplit=1, flags=re.M)
    summary = parts[0].strip()
    params: dict[str, str] = {}
    if len(parts) == 2:
        current = None
        for line in parts[1].splitlines():
            if re.match(r"^\s*(Returns|Raises|Examples?):\s*$", line):
                break
            m = re.match(r"^\s{0,8}(\w+)\s*(?:\([^)]*\))?:\s*(.*)$", line)
            if m:
                current = m.group(1)
                params[current] = m.group(2).strip()
            elif current and line.strip():
                params[current] += " " + line.strip()
    return summary, params


def memory_function(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Make a Python function callable by the LLM (usable as ``@memory_function`` or with ``name=``)."""

    def wrap(f: Callable[..., Any]) -> MemoryFunction:
        sig = inspect.signature(f)
        summary, docs = _parse_docstring(f.__doc__ or "")
        if not summary:
            raise TypeError(f"memory function {f.__name__} needs a docstring: the LLM reads it")
        params = list(sig.parameters.values())
        wants_memory = bool(params) and params[0].name == "memory"
        # resolve the hints of the described parameters only ("memory" may be a forward reference)
        described = {k: v for k, v in getattr(f, "__annotations__", {}).items() if k not in ("memory", "return")}
        hints = typing.get_type_hints(types.SimpleNamespace(__annotations__=described),
                                      globalns=getattr(f, "__globals__", {}))
        properties: dict[str, Any] = {}
        required: list[str] = []
        for p in params[1:] if wants_memory else params:
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"memory function {f.__name__}: *args/**kwargs cannot be described")
            if p.name == HEARTBEAT:
                continue
            schema, nullable = _json_type(hints.get(p.name, Any))
            if p.name in docs:
                schema = {**schema, "description": docs[p.name]}
            properties[p.name] = schema
            if p.default is inspect.Parameter.empty and not nullable:
                required.append(p.name)
        properties[HEARTBEAT] = _HEARTBEAT_SCHEMA
        schema = {
            "name": name or f.__name__,
            "description": summary,
            "parameters": {"type": "object", "properties": properties, "required": required,
                           "additionalProperties": False},
        }
        return MemoryFunction(name or f.__name__, f, schema, wants_memory)

    return wrap(fn) if fn is not None else wrap


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}


def check_arguments(func: MemoryFunction, arguments: dict[str, Any]) -> dict[str, Any]:
    """Validate arguments against the schema; return the keyword arguments to call with.

    Raises FunctionError naming every problem (unknown, missing or mistyped
    arguments), so the LLM can correct the call.
    """
    params = func.schema["parameters"]
    props: dict[str, Any] = params["properties"]
    problems = []
    unknown = sorted(set(arguments) - set(props))
    if unknown:
        problems.append(f"unknown argument(s) {', '.join(unknown)} (allowed: {', '.join(props)})")
    missing = [p for p in params["required"] if p not in arguments]
    if missing:
        problems.append(f"missing required argument(s) {', '.join(missing)}")
    kwargs: dict[str, Any] = {}
    for key, value in arguments.items():
        if key not in props or key == HEARTBEAT:
            continue
        spec = props[key]
        if value is None and key not in params["required"]:
            continue
        kind = spec.get("type")
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value = int(value)
        if kind and not _CHECKS[kind](value):
            problems.append(f"argument {key} must be a {kind}, got {type(value).__name__} {value!r:.40}")
            continue
        if kind == "array" and spec.get("items", {}).get("type"):
            item_kind = spec["items"]["type"]
            if not all(_CHECKS[item_kind](v) for v in value):
                problems.append(f"argument {key} must be an array of {item_kind}s")
                continue
        if "enum" in spec and value not in spec["enum"]:
            problems.append(f"argument {key} must be one of {spec['enum']}, got {value!r}")
            continue
        kwargs[key] = value
    if HEARTBEAT in arguments and not isinstance(arguments[HEARTBEAT], bool):
        problems.append(f"argument {HEARTBEAT} must be a boolean")
    if problems:
        raise FunctionError(f"bad call to {func.name}: " + "; ".join(problems))
    return kwargs


# ------------------------------------------------------------------ calling them


@dataclass
class CallRecord:
    """One memory function call made by the LLM, and how it went."""

    name: str
    arguments: dict[str, Any] | None
    ok: bool
    result: str  #: the tool message's content: JSON {"status": "OK"|"Failed", "message": ...}
    heartbeat: bool = False  #: the call asked for another step (request_heartbeat: true)
    replies: list[str] = field(default_factory=list)  #: messages for the user it produced (send_message)
    call_id: str = ""


def as_tool_call(call: Any) -> ToolCall:
    """A ToolCall from a ToolCall, an ``openai`` tool call object or its dict (arguments parsed leniently)."""
    if isinstance(call, ToolCall):
        return call
    if not isinstance(call, dict):
        dump = getattr(call, "model_dump", None)
        if dump is None:
            raise TypeError(f"a tool call is a ToolCall, a dict or an openai tool call object, not {type(call).__name__}")
        call = dump()
    fn = call.get("function") or {}
    name = fn.get("name") if isinstance(fn, dict) else None
    raw = fn.get("arguments") if isinstance(fn, dict) else None
    call_id = str(call.get("id") or "")
    if not call_id:
        raise TypeError("a tool call needs an id")
    if not isinstance(name, str) or not name:
        return ToolCall(call_id, "unnamed_function", None, "the tool call names no function",
                        raw_arguments=raw if isinstance(raw, str) else None)
    parsed = parse_arguments(raw)
    return ToolCall(call_id, name, parsed.arguments, parsed.error, raw_arguments=raw if isinstance(raw, str) else None)


def invoke(functions: Mapping[str, MemoryFunction], memory: Any, call: ToolCall) -> CallRecord:
    """Run one call: look the function up, check its arguments, call it. Never raises an
    Exception: whatever goes wrong is the record's failure message for the LLM."""
    heartbeat = bool(call.arguments and call.arguments.get(HEARTBEAT) is True)
    try:
        if call.error is not None:
            raise FunctionError(f"could not parse the arguments of {call.name}: {call.error}")
        func = functions.get(call.name)
        if func is None:
            raise FunctionError(f"no function {call.name!r}; available: {', '.join(functions)}")
        kwargs = check_arguments(func, call.arguments or {})
        value = func.fn(memory, **kwargs) if func.wants_memory else func.fn(**kwargs)
        text = json.dumps({"status": "OK", "message": value if value is not None else "None"},
                          ensure_ascii=False, default=str)
        ok = True
    except FunctionError as exc:
        text, ok = _failure(str(exc)), False
    except Exception as exc:  # noqa: BLE001 - a bug or an outage in the function: the LLM is told, the caller is not
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        known = isinstance(exc, (ValueError, KeyError, TypeError, VmemError))  # the stores' own words suffice
        text, ok = _failure(message if known else f"{type(exc).__name__}: {message}"), False
    return CallRecord(call.name, call.arguments, ok, text, heartbeat, call_id=call.id)


def _failure(message: str) -> str:
    return json.dumps({"status": "Failed", "message": message}, ensure_ascii=False)
