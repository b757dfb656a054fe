"""Tool-call parsing: native arguments repair, the JSON-in-text fallback, the protocol prompt."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from vmem.kernel.drivers import ToolCall
from vmem.kernel.drivers.lenient_json import MAX_DEPTH, parse_arguments
from vmem.kernel.drivers.toolcalls import (
    parse_text_tool_calls,
    render_call,
    to_text_protocol,
    tool_protocol_prompt,
)

# Cheap string fuzzers run more examples than the structured (recursive-strategy) properties;
# VMEM_FUZZ_EXAMPLES raises both for a deeper run.
_N = int(os.environ.get("VMEM_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=_N, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_TEXT = settings(max_examples=5 * _N, deadline=None)


def same(a: Any, b: Any) -> bool:
    """Equality that also tells True from 1 and -0.0 from 0.0."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return math.copysign(1.0, a) == math.copysign(1.0, b) and a == b
    return bool(a == b)


scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=16,
)
json_objects = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
identifiers = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,10}", fullmatch=True)
JSONISH = '{}[]":,\'\\ \n\t`truefalsnNTF0123456789.eE-+abc'


def check_result(r: Any) -> None:
    assert (r.arguments is None) != (r.error is None)
    if r.arguments is not None:
        assert isinstance(r.arguments, dict)
    else:
        assert isinstance(r.error, str) and r.error


# --------------------------------------------------------------------------- parse_arguments: fuzz


@FUZZ_TEXT
@given(st.text())
def test_parse_arguments_never_raises_on_any_text(s: str) -> None:
    check_result(parse_arguments(s))


@FUZZ_TEXT
@given(st.text(alphabet=JSONISH, max_size=60))
def test_parse_arguments_never_raises_on_jsonish_text(s: str) -> None:
    check_result(parse_arguments(s))


@FUZZ
@given(json_objects, st.data())
def test_parse_arguments_never_raises_on_mutated_json(obj: dict, data: st.DataObject) -> None:
    s = json.dumps(obj)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(s)))
        op = data.draw(st.sampled_from(["delete", "insert", "truncate"]))
        if op == "delete":
            s = s[:i] + s[i + 1 :]
        elif op == "insert":
            s = s[:i] + data.draw(st.sampled_from(list(JSONISH))) + s[i:]
        else:
            s = s[:i]
    check_result(parse_arguments(s))


@pytest.mark.parametrize("raw", [1, 2.5, True, ["a"], object(), {1: "x"}])
def test_parse_arguments_non_string_inputs_are_errors_not_exceptions(raw: Any) -> None:
    r = parse_arguments(raw)
    assert r.arguments is None and r.error


# --------------------------------------------------------------------------- parse_arguments: round trips


@FUZZ
@given(json_objects, st.sampled_from([None, 2]), st.booleans())
def test_well_formed_json_round_trips_exactly(obj: dict, indent: int | None, ascii_only: bool) -> None:
    r = parse_arguments(json.dumps(obj, indent=indent, ensure_ascii=ascii_only))
    assert r.error is None and r.repairs == ()
    assert same(r.arguments, obj)


@FUZZ
@given(json_objects)
def test_python_repr_is_repaired(obj: dict) -> None:
    # single quotes, True/False/None, Python string escapes
    r = parse_arguments(repr(obj))
    assert r.error is None, r.error
    assert same(r.arguments, obj)


def dumps_loose(v: Any, *, trailing: bool, bare_keys: bool) -> str:
    """Serialise with trailing commas and/or unquoted keys (keys must be identifiers then)."""
    if isinstance(v, dict):
        items = [
            (k if bare_keys else json.dumps(k)) + ": " + dumps_loose(x, trailing=trailing, bare_keys=bare_keys)
            for k, x in v.items()
        ]
        return "{" + ", ".join(items) + ("," if trailing and items else "") + "}"
    if isinstance(v, list):
        items = [dumps_loose(x, trailing=trailing, bare_keys=bare_keys) for x in v]
        return "[" + ", ".join(items) + ("," if trailing and items else "") + "]"
    return json.dumps(v)


ident_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(identifiers, inner, max_size=3),
    max_leaves=10,
)


@FUZZ
@given(st.dictionaries(identifiers, ident_values, min_size=1, max_size=4), st.booleans())
def test_trailing_commas_and_unquoted_keys_are_repaired(obj: dict, bare: bool) -> None:
    r = parse_arguments(dumps_loose(obj, trailing=True, bare_keys=bare))
    assert r.error is None, r.error
    assert same(r.arguments, obj)
    assert "trailing commas" in r.repairs


@FUZZ
@given(json_objects, st.data())
def test_missing_closing_brackets_at_the_end_are_repaired(obj: dict, data: st.DataObject) -> None:
    s = json.dumps(obj)
    closers = len(s) - len(s.rstrip("}]"))
    cut = data.draw(st.integers(1, closers))
    r = parse_arguments(s[:-cut])
    assert r.error is None, r.error
    assert same(r.arguments, obj)


@FUZZ
@given(json_objects, st.sampled_from(["fence", "json fence", "prose", "prose+fence"]))
def test_fences_and_surrounding_text_are_repaired(obj: dict, wrap: str) -> None:
    s = json.dumps(obj)
    wrapped = {
        "fence": f"```\n{s}\n```",
        "json fence": f"```json\n{s}\n```",
        "prose": f"Here are the arguments: {s} -- hope this helps.",
        "prose+fence": f"Sure!\n```json\n{s}\n```\nDone.",
    }[wrap]
    r = parse_arguments(wrapped)
    assert r.error is None, r.error
    assert same(r.arguments, obj)


def test_double_encoded_json_is_unwrapped() -> None:
    r = parse_arguments(json.dumps(json.dumps({"a": [1, 2]})))
    assert r.arguments == {"a": [1, 2]} and "JSON double-encoded as a string" in r.repairs


@pytest.mark.parametrize("raw", [None, "", "   ", "null"])
def test_empty_arguments_mean_no_arguments(raw: Any) -> None:
    assert parse_arguments(raw) == ({}, None, ())


def test_repairs_report_what_was_fixed() -> None:
    r = parse_arguments("{'name': True, count: 3,}")
    assert r.arguments == {"name": True, "count": 3}
    assert set(r.repairs) == {"single-quoted strings", "Python literals True/False/None", "unquoted keys", "trailing commas"}


def test_raw_newlines_inside_strings_are_accepted() -> None:
    assert parse_arguments('{"content": "line one\nline two"}').arguments == {"content": "line one\nline two"}


# --------------------------------------------------------------------------- parse_arguments: precise errors


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ('{"message": "cut off in the mid', "ends inside a string"),
        ('{"message": ', "ends where a value was expected"),
        ('{"message"', "ends after key 'message'"),
        ('{"a" 1}', "expected ':' after key 'a'"),
        ('{"a": 1 "b": 2}', "expected ',' or '}' after the value of 'a'"),
        ('{"a": [1 2]}', "expected ',' or ']' in an array"),
        ('{"a": wrong}', "unexpected 'w' where a value was expected"),
        ("[1, 2]", "must be a JSON object, got an array"),
        ('"just a string"', "must be a JSON object, got a string"),
        ("42", "must be a JSON object, got a number"),
        ("hello there", "contain no JSON object"),
        ('{"a": 1}{"b": 2}', "more than one JSON object"),
        ('{"a": "\\u12"}', "invalid \\u escape"),
    ],
)
def test_unrepairable_arguments_give_a_precise_error(raw: str, needle: str) -> None:
    r = parse_arguments(raw)
    assert r.arguments is None
    assert needle in r.error, r.error


def test_error_gives_line_and_column() -> None:
    r = parse_arguments('{\n  "a": 1,\n  "b" 2\n}')
    assert r.error is not None and "line 3, column 7" in r.error, r.error


@pytest.mark.parametrize("depth", [MAX_DEPTH + 5, 50_000])
def test_deep_nesting_is_an_error_not_a_recursion_error(depth: int) -> None:
    r = parse_arguments('{"a": ' + "[" * depth)
    assert r.arguments is None and "nested more than" in r.error
    r = parse_arguments("{'a': " + "[" * depth + "]" * depth + "}")
    assert r.arguments is None and "nested more than" in r.error


def test_huge_integer_is_an_error_not_an_exception() -> None:
    r = parse_arguments("{'n': " + "9" * 6000 + "}")
    assert r.arguments is None and "number too long" in r.error


# --------------------------------------------------------------------------- text fallback


def _ids() -> Any:
    counter = iter(range(10**6))
    return lambda: f"id{next(counter)}"


RENDERERS = {
    "protocol fenced": lambda n, a: render_call(n, a),
    "protocol bare": lambda n, a: render_call(n, a, fenced=False),
    "name/arguments": lambda n, a: json.dumps({"name": n, "arguments": a}),
    "name/parameters fenced": lambda n, a: "```json\n" + json.dumps({"name": n, "parameters": a}) + "\n```",
    "openai shape, string arguments": lambda n, a: json.dumps(
        {"type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
    ),
    "tool_calls list": lambda n, a: json.dumps({"tool_calls": [{"function": n, "arguments": a}]}),
}

prose = st.text(alphabet="abcdefghij ABC.,!?:;'\"\n-", max_size=40)


@FUZZ
@given(
    st.lists(st.tuples(identifiers, json_objects, st.sampled_from(sorted(RENDERERS))), min_size=1, max_size=4),
    st.lists(prose, min_size=5, max_size=5),
)
def test_text_calls_round_trip(calls: list, gaps: list[str]) -> None:
    parts = [gaps[0]]
    for k, (name, args, style) in enumerate(calls):
        parts.append(RENDERERS[style](name, args))
        parts.append(gaps[k + 1])
    text = "\n".join(parts)
    found = parse_text_tool_calls(text, make_id=_ids())
    assert [c.name for c in found.calls] == [c[0] for c in calls]
    for got, (_, args, _) in zip(found.calls, calls):
        assert got.error is None and same(got.arguments, args)
    for gap in parts[::2]:
        if gap.strip():
            assert found.text is not None and gap.strip() in found.text
    assert found.text is None or "{" not in found.text


@FUZZ_TEXT
@given(st.text())
def test_text_parser_never_raises_on_any_text(s: str) -> None:
    found = parse_text_tool_calls(s)
    assert all(isinstance(c, ToolCall) for c in found.calls)
    assert found.text is None or isinstance(found.text, str)


@FUZZ_TEXT
@given(st.text(alphabet=JSONISH + "ufnction", max_size=80))
@example('{"function": "x", "arguments": {')
@example('[{"function": "x"}, 3]')
def test_text_parser_never_raises_on_jsonish_text(s: str) -> None:
    parse_text_tool_calls(s, known={"x"})


def test_two_fenced_calls_and_prose() -> None:
    text = (
        "I should remember this.\n"
        '```json\n{"function": "core_memory_append", "arguments": {"label": "human", "content": "likes ```code```"}}\n```\n'
        "And reply:\n"
        "```json\n{'function': 'send_message', 'arguments': {'message': 'Noted!'},}\n```"
    )
    found = parse_text_tool_calls(text, make_id=_ids())
    assert [(c.id, c.name, c.arguments) for c in found.calls] == [
        ("id0", "core_memory_append", {"label": "human", "content": "likes ```code```"}),
        ("id1", "send_message", {"message": "Noted!"}),
    ]
    assert found.text == "I should remember this.\n\nAnd reply:"


def test_text_without_calls_is_returned_unchanged() -> None:
    assert parse_text_tool_calls("  just talking {not json} [ok]  ") == ([], "just talking {not json} [ok]")
    assert parse_text_tool_calls("") == ([], None)
    assert parse_text_tool_calls(None) == ([], None)


def test_a_dict_with_a_name_is_not_a_call_unless_the_name_is_known() -> None:
    text = 'The user is {"name": "Ada"}.'
    assert parse_text_tool_calls(text).calls == []
    found = parse_text_tool_calls(text, known={"Ada"})
    assert [c.name for c in found.calls] == ["Ada"] and found.calls[0].arguments == {}


def test_only_known_drops_unknown_names_but_default_keeps_them() -> None:
    text = '{"function": "nope", "arguments": {}} {"function": "yes", "arguments": {"a": 1}}'
    assert [c.name for c in parse_text_tool_calls(text).calls] == ["nope", "yes"]
    found = parse_text_tool_calls(text, known={"yes"}, only_known=True)
    assert [c.name for c in found.calls] == ["yes"]
    assert found.text == '{"function": "nope", "arguments": {}}'


def test_malformed_string_arguments_in_text_become_a_call_error() -> None:
    found = parse_text_tool_calls('{"name": "send_message", "arguments": "{\\"message\\": "}')
    (call,) = found.calls
    assert call.name == "send_message" and call.arguments is None
    assert "ends where a value was expected" in call.error
    assert call.raw_arguments == '{"message": '


def test_non_object_arguments_in_text_become_a_call_error() -> None:
    (call,) = parse_text_tool_calls('{"function": "f", "arguments": [1, 2]}').calls
    assert call.arguments is None and "got an array" in call.error


def test_a_list_of_calls_and_ids_are_kept() -> None:
    text = '[{"id": "c1", "name": "a", "arguments": {}}, {"id": "c2", "name": "b", "arguments": {"x": 1}}]'
    found = parse_text_tool_calls(text)
    assert [(c.id, c.name, c.arguments) for c in found.calls] == [("c1", "a", {}), ("c2", "b", {"x": 1})]
    assert found.text is None


def test_a_call_cut_off_by_the_token_limit_is_left_as_text() -> None:
    text = 'ok {"function": "send_message", "arguments": {"message": "hel'
    assert parse_text_tool_calls(text).calls == []


# --------------------------------------------------------------------------- the protocol prompt

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "send_message",
            "description": "Send a message to the human.",
            "parameters": {
                "type": "object",
                "properties": {
                    "message": {"type": "string", "description": "What to say."},
                    "request_heartbeat": {"type": "boolean"},
                },
                "required": ["message"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "archival_memory_search",
            "description": "Search archival memory.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "mode": {"enum": ["hybrid", "text", "vector"]},
                    "page": {"type": ["integer", "null"]},
                },
                "required": ["query"],
            },
        },
    },
    {"type": "function", "function": {"name": "pause", "description": "Do nothing.", "parameters": {"type": "object", "properties": {}}}},
]


def test_protocol_prompt_lists_every_tool_and_argument() -> None:
    prompt = tool_protocol_prompt(TOOLS)
    for line in [
        "### send_message",
        "Send a message to the human.",
        "- message (string, required): What to say.",
        "- request_heartbeat (boolean, optional)",
        "### archival_memory_search",
        "- tags (array of string, optional)",
        '- mode (one of "hybrid", "text", "vector", optional)',
        "- page (integer or null, optional)",
        "### pause",
        "Arguments: none.",
    ]:
        assert line in prompt, line


def test_protocol_prompt_example_is_itself_a_parseable_call() -> None:
    found = parse_text_tool_calls(tool_protocol_prompt(TOOLS))
    assert [(c.name, c.arguments) for c in found.calls] == [("function_name", {"argument_name": "value"})]


def test_history_is_rewritten_for_a_no_tools_model() -> None:
    history = [
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": "thinking",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "send_message", "arguments": '{"message": "hello"}'}},
                {"id": "c2", "type": "function", "function": {"name": "pause", "arguments": "{broken"}},
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": '{"status": "OK"}'},
        {"role": "tool", "tool_call_id": "c2", "content": "error: bad JSON"},
    ]
    before = json.dumps(history)
    out = to_text_protocol(history, TOOLS)
    assert json.dumps(history) == before  # input untouched
    assert out[0]["role"] == "system" and out[0]["content"].startswith("You are an agent.\n\n# Calling functions")
    assert "### send_message" in out[0]["content"]
    assert out[1] == {"role": "user", "content": "hi"}
    assert "tool_calls" not in out[2] and out[2]["content"].startswith("thinking")
    (call,) = [c for c in parse_text_tool_calls(out[2]["content"]).calls if c.arguments is not None]
    assert (call.name, call.arguments) == ("send_message", {"message": "hello"})
    assert "{broken" in out[2]["content"]  # the malformed call is shown verbatim
    # the two results are merged into one user message: roles must alternate for many templates
    assert len(out) == 4 and out[3]["role"] == "user"
    first, second = out[3]["content"].split("\n\n")
    assert first == 'Function result (send_message, call c1):\n{"status": "OK"}'
    assert second.startswith("Function result (pause, call c2):")
    assert [m["role"] for m in out] == ["system", "user", "assistant", "user"]


def test_adjacent_same_role_messages_are_merged_but_others_kept() -> None:
    history = [
        {"role": "user", "content": "a"},
        {"role": "user", "content": "b"},
        {"role": "user", "content": "c", "name": "bob"},  # carries more than text: kept apart
        {"role": "assistant", "content": "x"},
        {"role": "system", "content": "alert"},
        {"role": "system", "content": "alert 2"},
    ]
    assert to_text_protocol(history, []) == [
        {"role": "user", "content": "a\n\nb"},
        {"role": "user", "content": "c", "name": "bob"},
        {"role": "assistant", "content": "x"},
        {"role": "system", "content": "alert"},
        {"role": "system", "content": "alert 2"},
    ]


def test_protocol_system_message_is_added_when_none_exists_and_omitted_without_tools() -> None:
    out = to_text_protocol([{"role": "user", "content": "hi"}], TOOLS)
    assert out[0]["role"] == "system" and "# Available functions" in out[0]["content"]
    assert to_text_protocol([{"role": "user", "content": "hi"}], []) == [{"role": "user", "content": "hi"}]
