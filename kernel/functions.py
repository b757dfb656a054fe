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

Interface::

    from vmem.kernel.functions import memory_function, check_arguments, invoke, FunctionError
    func = memory_function(fn)                # MemoryFunction: .name, .schema (OpenAI), .tool, .model
    kwargs = check_arguments(func, {"sides": 20})   # validated keyword arguments, or FunctionError
    record = invoke(functions, memory, call)  # CallRecord: never raises

Arguments are typed by pydantic, not by hand: :func:`memory_function` builds one pydantic
model from the signature (``strict``, extra arguments forbidden) and the JSON schema the
model reads is that model's. A call is validated as the JSON it is, so the schema and the
check cannot disagree: ``datetime.date`` is a ``YYYY-MM-DD`` string (format ``date``),
``datetime.datetime`` an RFC 3339 one (format ``date-time``), ``int | str`` either and nothing
else, ``Literal`` one of its values; a number with no fraction (``2.0``) is the integer
it is in JSON. Types pydantic cannot describe as JSON are refused at registration.

An optional parameter (one with a default, or ``X | None``) given ``null``, ``""`` or ``[]``
is *not given*: it takes its default. Models fill optional fields with empty values all
the time, and refusing ``"start_date": ""`` helps no one. A required parameter's value is
taken as given, empty or not.

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
from typing import Annotated, Any, Callable, Literal, Union

import docstring_parser
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, TypeAdapter, ValidationError, create_model
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import ErrorDetails, PydanticCustomError, core_schema

from vmem.errors import VmemError
from vmem.kernel.drivers.base import ToolCall
from vmem.kernel.drivers.lenient_json import parse_arguments

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
_HEARTBEAT_DESCRIPTION = "true: another step follows this call (to use its result or call another function)."


class FunctionError(Exception):
    """A memory function failed in a way the LLM can act on (answered as a function error)."""


@dataclass(frozen=True)
class MemoryFunction:
    """A function the LLM may call: the callable, its name, its tool schema and its arguments' model."""

    name: str
    fn: Callable[..., Any]
    schema: dict[str, Any]
    wants_memory: bool  #: the first parameter is ``memory``: the Memory is passed there
    model: type[BaseModel]  #: the arguments (request_heartbeat included), as pydantic validates them
    optional: frozenset[str]  #: the arguments a call may leave out (given empty, they are left out)
    arguments: Mapping[str, str]  #: the model's field -> the argument's name

    @property
    def tool(self) -> dict[str, Any]:
        """The OpenAI tool schema."""
        return {"type": "function", "function": self.schema}


# ------------------------------------------------------------------ describing them


_STRICT = ConfigDict(strict=True, extra="forbid")


def _date_text(value: Any) -> Any:
    """A date or datetime argument is a string, and not a number: pydantic would read a Unix
    time in a string of digits, and the ``date`` and ``date-time`` formats have none."""
    if not isinstance(value, str):
        raise PydanticCustomError("date_type", "a date is a string")
    if re.fullmatch(r"\s*[-+]?\d+(\.\d*)?\s*", value):
        raise PydanticCustomError("date_parsing", "a number is not a date")
    return value  # pydantic parses it (lax: from a Python string, as from JSON text)


def _bools_apart(values: tuple[Any, ...]) -> Any:
    """A check that JSON's booleans match only boolean literal values, as JSON Schema's ``enum``
    compares them (Python's ``True == 1`` would let ``true`` through for ``Literal[1, 2, 3]``)."""
    def check(value: Any) -> Any:
        if isinstance(value, bool) != any(isinstance(v, bool) for v in values if v == value):
            raise PydanticCustomError("literal_error", "Input should be one of {expected}",
                                      {"expected": ", ".join(json.dumps(v) for v in values)})
        return value
    return BeforeValidator(check)


def _as_json_schema_says(hint: Any) -> Any:
    """``hint`` with every date and datetime in it read from text only (see :func:`_date_text`),
    and every literal's booleans kept apart from its numbers (see :func:`_bools_apart`)."""
    if hint in (_dt.date, _dt.datetime):
        return Annotated[hint, Strict(False), BeforeValidator(_date_text)]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal and any(isinstance(a, (int, float)) for a in args):
        return Annotated[hint, _bools_apart(args)]
    if origin is None or origin is Literal or not args:
        return hint
    if origin is Annotated:
        params = (_as_json_schema_says(args[0]), *hint.__metadata__)
        return Annotated[params]
    new = tuple(_as_json_schema_says(a) for a in args)
    if new == args:
        return hint
    return Union[new] if origin is types.UnionType else origin[new]  # noqa: UP007 - the runtime form


class _ModelSchema(GenerateJsonSchema):
    """pydantic's JSON schema as the LLM reads it: no titles, no defaults, keys in the order made."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value


def _without_none(hint: Any) -> tuple[Any, bool]:
    """``hint`` less ``None``, and whether it allowed ``None``."""
    if typing.get_origin(hint) in (Union, types.UnionType) and type(None) in typing.get_args(hint):
        rest = tuple(a for a in typing.get_args(hint) if a is not type(None))
        return (rest[0] if len(rest) == 1 else Union[rest]), True  # noqa: UP007
    return hint, hint is None or hint is type(None)


def _docstring(fn: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """The summary (all text before ``Args:``) and each argument's description, on one line each."""
    doc = docstring_parser.parse(inspect.cleandoc(fn.__doc__ or ""), style=docstring_parser.DocstringStyle.GOOGLE)
    summary = "\n\n".join(part for part in (doc.short_description, doc.long_description) if part)
    return summary.strip(), {p.arg_name: " ".join((p.description or "").split()) for p in doc.params}


def memory_function(fn: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
    """Make a Python function callable by the LLM (usable as ``@memory_function`` or with ``name=``).

    Raises TypeError if the function has no docstring, takes ``*args``/``**kwargs``, or has
    a parameter whose type has no JSON form.
    """

    def wrap(f: Callable[..., Any]) -> MemoryFunction:
        summary, docs = _docstring(f)
        if not summary:
            raise TypeError(f"memory function {f.__name__} needs a docstring: the LLM reads it")
        params = list(inspect.signature(f).parameters.values())
        wants_memory = bool(params) and params[0].name == "memory"
        # resolve the hints of the described parameters only ("memory" may be a forward reference)
        described = {k: v for k, v in getattr(f, "__annotations__", {}).items() if k not in ("memory", "return")}
        hints = typing.get_type_hints(types.SimpleNamespace(__annotations__=described),
                                      globalns=getattr(f, "__globals__", {}), include_extras=True)
        fields: dict[str, Any] = {}
        for i, p in enumerate(params[1:] if wants_memory else params):
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"memory function {f.__name__}: *args/**kwargs cannot be described")
            if p.name == HEARTBEAT:
                continue
            hint, nullable = _without_none(hints.get(p.name, Any))
            hint = _as_json_schema_says(hint)
            try:
                TypeAdapter(hint, config=_STRICT).json_schema()
            except Exception as exc:  # noqa: BLE001 - pydantic's several "cannot do this type" errors
                raise TypeError(f"memory functions take JSON types; cannot describe parameter {p.name} "
                                f"of {f.__name__}: {hints.get(p.name)!r}") from exc
            default = p.default if p.default is not p.empty else (None if nullable else ...)
            # fields are named by position, the parameter is the alias: any name works, even "schema"
            fields[f"p{i}"] = (hint, Field(default, alias=p.name, description=docs.get(p.name)))
        fields["heartbeat"] = (bool, Field(False, alias=HEARTBEAT, description=_HEARTBEAT_DESCRIPTION))
        model = create_model(f"{f.__name__}_arguments", __config__=_STRICT, **fields)
        made = model.model_json_schema(schema_generator=_ModelSchema)
        parameters = {"type": "object", "properties": made["properties"], "required": made.get("required", []),
                      "additionalProperties": False}
        if "$defs" in made:
            parameters["$defs"] = made["$defs"]
        schema = {"name": name or f.__name__, "description": summary, "parameters": parameters}
        optional = frozenset(parameters["properties"]) - frozenset(parameters["required"])
        arguments = types.MappingProxyType({k: v.alias or k for k, v in model.model_fields.items()})
        return MemoryFunction(name or f.__name__, f, schema, wants_memory, model, optional, arguments)

    return wrap(fn) if fn is not None else wrap


# ------------------------------------------------------------------ checking a call


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list)) and not value)


def _json_number(value: Any) -> Any:
    """JSON has one number type: ``2.0`` is the integer 2 (JSON Schema agrees)."""
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [_json_number(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_number(v) for k, v in value.items()}
    return value


def check_arguments(func: MemoryFunction, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate arguments against the function's model; return the keyword arguments to call with.

    Optional arguments given empty are left out (see the module's docstring), the rest is
    validated as JSON. Raises FunctionError naming every problem (unknown, missing or
    mistyped arguments), so the LLM can correct the call.
    """
    optional = func.optional
    given = {k: v if isinstance(v, str) else _json_number(v) for k, v in arguments.items()
             if not (k in optional and _empty(v))}
    try:
        text = json.dumps(given, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise FunctionError(f"bad call to {func.name}: the arguments are not JSON ({exc})") from None
    try:
        model = func.model.model_validate_json(text)
    except ValidationError as exc:
        raise FunctionError(f"bad call to {func.name}: " + "; ".join(_problems(func, exc, given))) from None
    names = func.arguments
    return {names[k]: getattr(model, k) for k in model.model_fields_set if names[k] != HEARTBEAT}


def _problems(func: MemoryFunction, error: ValidationError, given: Mapping[str, Any]) -> list[str]:
    """pydantic's errors as one short phrase per argument, in the schema's order."""
    props = func.schema["parameters"]["properties"]
    unknown: list[str] = []
    missing: list[str] = []
    wrong: dict[str, list[ErrorDetails]] = {}
    for e in error.errors(include_url=False):
        arg = str(e["loc"][0]) if e["loc"] else ""
        if e["type"] == "extra_forbidden":
            unknown.append(arg)
        elif e["type"] == "missing":
            missing.append(arg)
        else:
            wrong.setdefault(arg, []).append(e)
    problems = []
    if unknown:
        problems.append(f"unknown argument(s) {', '.join(sorted(unknown))} (allowed: {', '.join(props)})")
    if missing:
        problems.append(f"missing required argument(s) {', '.join(missing)}")
    for arg in props:
        if arg in wrong:
            value = given[arg]
            mistyped = [e for e in wrong[arg] if e["type"].endswith(("_type", "_parsing")) or e["type"] in _TYPE_ERRORS]
            if mistyped or len(wrong[arg]) > 1:
                problems.append(f"argument {arg} must be {_expected(props[arg])}, got {type(value).__name__} "
                                f"{value!r:.40}")
            else:  # a constraint of the type (a range, a length): pydantic's own words
                problems.append(f"argument {arg}: {wrong[arg][0]['msg'][:1].lower()}{wrong[arg][0]['msg'][1:]}")
    return problems


_TYPE_ERRORS = frozenset({"literal_error", "enum", "union_tag_invalid", "int_from_float", "date_from_datetime_inexact",
                          "datetime_from_date_parsing", "is_instance_of"})

_KINDS = {"string": "a string", "integer": "an integer", "number": "a number", "boolean": "a boolean",
          "array": "an array", "object": "an object", "null": "null"}


def _expected(schema: Mapping[str, Any]) -> str:
    """What a JSON schema (as :func:`memory_function` makes them) allows, in words."""
    if "enum" in schema:
        return f"one of {schema['enum']}"
    if "anyOf" in schema:
        return " or ".join(_expected(s) for s in schema["anyOf"])
    if schema.get("format") == "date":
        return "a date as YYYY-MM-DD"
    if schema.get("format") == "date-time":
        return "a date and time as YYYY-MM-DDTHH:MM:SS (RFC 3339)"
    kind = schema.get("type")
    if kind == "array" and schema.get("items"):
        item = _expected(schema["items"])
        plural = item.split(" ", 1)[1] + "s" if item.startswith(("a ", "an ")) and " " not in item.split(" ", 1)[1] \
            else f"items each {item}"
        return f"an array of {plural}"
    return _KINDS.get(kind, "a JSON value") if isinstance(kind, str) else "a JSON value"


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
