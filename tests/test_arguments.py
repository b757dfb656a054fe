"""Memory-function arguments: the schema the model sees, and the calls the function accepts.

The schema and the validation both come from the function's signature (pydantic), so
they agree: the property tests check that a value the schema allows is accepted and a
value it refuses is refused, parameter by parameter, for every built-in and for a
function with the awkward types (dates, datetimes, unions). An optional parameter given
``null``, ``""`` or ``[]`` is "not given", whatever its type: models fill optional
fields with empty values all the time.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Literal

import jsonschema
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.app.mcp_server import MemoryService
from vmem.kernel import FunctionError, Memory, memory_function
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.functions import HEARTBEAT, check_arguments

# What the OpenAI Agents SDK sent over MCP (a local Qwen2.5-Coder-1.5B), verbatim (issue 19).
AGENTS_SDK_SEARCH = {"query": "bike lock code", "tags": [], "tags_match": "any", "start_date": "",
                     "end_date": "", "page": 0}


def new_memory(path) -> Memory:
    return Memory.create(path, system="s", blocks={"human": {"value": "", "limit": 200}})


def result(record) -> dict[str, Any]:
    return json.loads(record.result)


def execute(memory: Memory, cid: str, name: str, arguments: dict[str, Any]):
    """What an own agent loop does with one tool call of the model's: append it, then run it."""
    call = {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
    memory.append({"role": "assistant", "content": None, "tool_calls": [call]})
    return memory.execute(call)


def test_the_agents_sdk_search_with_empty_optional_fields_finds_the_fact(tmp_path):
    with new_memory(tmp_path / "a") as memory:
        saved = execute(memory, "c1", "archival_memory_insert", {"content": "The bike lock code is 4711."})
        assert saved.ok, saved.result
        record = execute(memory, "c2", "archival_memory_search", AGENTS_SDK_SEARCH)
        assert record.ok, record.result
        assert "4711" in result(record)["message"]
        memory.check()


def test_the_agents_sdk_search_through_the_mcp_call_path(tmp_path):
    new_memory(tmp_path / "a").close()
    service = MemoryService(tmp_path / "a", hold=0)
    try:
        assert service.call("archival_memory_insert", {"content": "The bike lock code is 4711."}).ok
        record = service.call("archival_memory_search", dict(AGENTS_SDK_SEARCH))
        assert record.ok, record.result
        assert "4711" in result(record)["message"]
        record = service.call("conversation_search", {"query": "", "roles": [], "start_date": "", "end_date": None,
                                                      "page": 0})
        assert record.ok, record.result
    finally:
        service.close()
    with Memory.open(tmp_path / "a", read_only=True) as memory:
        memory.check()


def test_empty_values_are_not_given_for_every_optional_parameter_of_every_builtin(tmp_path):
    with new_memory(tmp_path / "a") as memory:
        for func in BUILTINS:
            required = func.schema["parameters"]["required"]
            optional = [p for p in func.schema["parameters"]["properties"] if p not in required]
            for empty in (None, "", []):
                given = {p: empty for p in optional}
                assert check_arguments(func, {**given, **{p: "x" for p in required}}) == {p: "x" for p in required}
        for args in ({"label": "human", "content": "x", "insert_line": ""}, {"content": "y", "tags": ""}):
            name = "memory_insert" if "label" in args else "archival_memory_insert"
            record = execute(memory, name, name, args)
            assert record.ok, record.result
        assert memory.block("human").value == "x"
        memory.check()


def test_a_required_argument_given_empty_is_still_refused_or_taken_as_given():
    append = next(f for f in BUILTINS if f.name == "core_memory_append")
    with pytest.raises(FunctionError, match="argument content must be a string, got NoneType"):
        check_arguments(append, {"label": "human", "content": None})
    replace = next(f for f in BUILTINS if f.name == "core_memory_replace")
    assert check_arguments(replace, {"label": "h", "old_content": "a", "new_content": ""})["new_content"] == ""


# ---------------------------------------------------------------- the awkward types


@memory_function
def plan(day: dt.date, at: dt.datetime | None = None, ref: int | str = 0, size: Literal[1, 2, 3] = 1,
         ratio: float = 1.0, names: list[str] | None = None, urgent: bool = False) -> str:
    """Plan something.

    Args:
        day: the day.
        at: when exactly.
        ref: a number or a name.
        size: how big.
        ratio: a ratio.
        names: who.
        urgent: whether it is urgent.
    """
    return f"{day!r} {at!r} {ref!r} {size!r} {ratio!r} {names!r} {urgent!r}"


def test_a_date_parameter_is_validated_and_passed_as_a_date():
    assert check_arguments(plan, {"day": "2024-03-01"})["day"] == dt.date(2024, 3, 1)
    for bad in ("not a date", "2024-13-01", "20240301", "86400", "2024-03-01T10:00:00"):
        with pytest.raises(FunctionError, match=r"^bad call to plan: argument day must be a date as YYYY-MM-DD"):
            check_arguments(plan, {"day": bad})
    with pytest.raises(FunctionError, match="argument day must be a date as YYYY-MM-DD, got int 20240301"):
        check_arguments(plan, {"day": 20240301})


def test_a_datetime_parameter_is_described_as_date_time_and_validated():
    schema = plan.schema["parameters"]["properties"]["at"]
    assert schema["type"] == "string" and schema["format"] == "date-time"
    at = check_arguments(plan, {"day": "2024-03-01", "at": "2024-03-01T10:30:00Z"})["at"]
    assert at == dt.datetime(2024, 3, 1, 10, 30, tzinfo=dt.timezone.utc)
    with pytest.raises(FunctionError, match="argument at must be a date and time"):
        check_arguments(plan, {"day": "2024-03-01", "at": "half past ten"})


def test_a_union_gets_a_real_schema_and_a_list_is_refused():
    assert plan.schema["parameters"]["properties"]["ref"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert check_arguments(plan, {"day": "2024-03-01", "ref": 7})["ref"] == 7
    assert check_arguments(plan, {"day": "2024-03-01", "ref": "seven"})["ref"] == "seven"
    with pytest.raises(FunctionError, match=r"argument ref must be an integer or a string, got list \[1\]"):
        check_arguments(plan, {"day": "2024-03-01", "ref": [1]})


def test_the_messages_are_short_and_name_every_problem():
    with pytest.raises(FunctionError) as info:
        check_arguments(plan, {"size": 4, "urgent": "yes", "colour": "red", HEARTBEAT: "please"})
    assert str(info.value) == (
        "bad call to plan: unknown argument(s) colour (allowed: day, at, ref, size, ratio, names, urgent, "
        "request_heartbeat); missing required argument(s) day; argument size must be one of [1, 2, 3], got int 4; "
        "argument urgent must be a boolean, got str 'yes'; argument request_heartbeat must be a boolean, "
        "got str 'please'")
    with pytest.raises(FunctionError, match=r"argument names must be an array of strings, got list \[1\]"):
        check_arguments(plan, {"day": "2024-03-01", "names": [1]})
    assert check_arguments(plan, {"day": "2024-03-01", "ratio": 2})["ratio"] == 2.0
    assert check_arguments(plan, {"day": "2024-03-01", "size": 2.0})["size"] == 2  # JSON: 2.0 is the integer 2


class Thing:
    """Not a JSON type."""


def test_a_function_whose_types_cannot_be_described_is_refused_at_registration():
    def odd(thing: Thing) -> str:
        """Odd.

        Args:
            thing: a thing.
        """
        return ""

    with pytest.raises(TypeError, match="memory functions take JSON types; cannot describe parameter thing"):
        memory_function(odd)


# ---------------------------------------------------------------- schema == validation


FUNCTIONS = [*BUILTINS, plan]

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=12) | st.dates().map(str) | st.datetimes().map(lambda d: d.isoformat() + "Z"),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=2),
                    max_leaves=6)


def schema_accepts(schema: dict[str, Any], value: Any) -> bool:
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(schema, format_checker=checker).is_valid(value)


def function_accepts(func, name: str, value: Any) -> bool:
    required = func.schema["parameters"]["required"]
    base = {p: example(func, p) for p in required if p != name}
    try:
        check_arguments(func, {**base, name: value})
    except FunctionError:
        return False
    return True


def example(func, name: str) -> Any:
    """A value the schema allows for a required parameter."""
    return "2024-01-01" if func.schema["parameters"]["properties"][name].get("format") == "date" else "x"


def empty_for(func, name: str, value: Any) -> bool:
    return name not in func.schema["parameters"]["required"] and value in (None, "", [])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_every_schema_accepts_exactly_what_its_function_accepts(data):
    func = data.draw(st.sampled_from(FUNCTIONS), label="function")
    name = data.draw(st.sampled_from(sorted(func.schema["parameters"]["properties"])), label="parameter")
    schema = func.schema["parameters"]["properties"][name]
    if "format" in schema and schema["format"] == "date-time":
        return  # RFC 3339 checking needs a package jsonschema leaves optional; the test above covers it
    value = data.draw(JSON | values_in(schema), label="value")
    if empty_for(func, name, value):
        assert function_accepts(func, name, value)  # "not given", whatever the schema says
    else:
        assert function_accepts(func, name, value) == schema_accepts(schema, value), (func.name, name, value)


def values_in(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a JSON schema as the memory functions use it allows (the model's side of the contract)."""
    if "anyOf" in schema:
        return st.one_of([values_in(s) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "string":
        return st.dates().map(str) if schema.get("format") == "date" else st.text(max_size=20)
    if kind == "integer":
        return st.integers()
    if kind == "number":
        return st.floats(allow_nan=False, allow_infinity=False) | st.integers()
    if kind == "boolean":
        return st.booleans()
    if kind == "array":
        return st.lists(values_in(schema.get("items", {})), max_size=4)
    return st.none() | st.text(max_size=5) | st.integers()


def test_no_schema_keeps_pydantic_noise():
    for func in FUNCTIONS:
        text = json.dumps(func.schema)
        assert '"title"' not in text and '"default": null' not in text and "$defs" not in text, func.name


def test_a_boolean_is_not_a_number_of_an_integer_enum():
    """JSON Schema's enum keeps true apart from 1; Python's True == 1 let a model's `true` through for
    Literal[1, 2, 3] (a hypothesis draw of the test above found it)."""
    func = next(f for f in FUNCTIONS if f.name == "plan")
    schema = func.schema["parameters"]["properties"]["size"]
    for value in (True, False):
        assert not function_accepts(func, "size", value) and not schema_accepts(schema, value)
    for value in (1, 3, 2.0):
        assert function_accepts(func, "size", value) and schema_accepts(schema, value)
