"""Memory functions: what the LLM may call, their JSON schemas, and argument checking.

A memory function is a plain Python function with type hints and a docstring
in Google style (a summary, then ``Args:``). Its tool schema is generated from
both. The first parameter may be ``agent``: the calling :class:`kernel.Agent`
is passed there and it is not part of the schema. Every function also takes
``request_heartbeat`` (chain another step after this one), handled by the
kernel. Register your own with :func:`memory_function`::

    @memory_function
    def roll_dice(agent, sides: int = 6) -> str:
        \"\"\"Roll a die.

        Args:
            sides: how many sides the die has.
        \"\"\"
        return str(random.randint(1, sides))

A function signals a problem the LLM can fix by raising :class:`FunctionError`
(or ValueError/KeyError from the stores); the kernel answers it to the LLM as a
failed call and chains a step so the model can retry.
"""

from __future__ import annotations

import datetime as _dt
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, Literal, Sequence

__all__ = [
    "FunctionError",
    "MemoryFunction",
    "memory_function",
    "HEARTBEAT",
    "check_arguments",
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
    wants_agent: bool

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
        wants_agent = bool(params) and params[0].name == "agent"
        # resolve the hints of the described parameters only ("agent" may be a forward reference)
        described = {k: v for k, v in getattr(f, "__annotations__", {}).items() if k not in ("agent", "return")}
        hints = typing.get_type_hints(types.SimpleNamespace(__annotations__=described),
                                      globalns=getattr(f, "__globals__", {}))
        properties: dict[str, Any] = {}
        required: list[str] = []
        for p in params[1:] if wants_agent else params:
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
        return MemoryFunction(name or f.__name__, f, schema, wants_agent)

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
