"""Calls written as tags, arguments as attributes: what Qwen2.5-Coder-1.5B wrote as the vmem agent in
``vmem eval qa`` (its context is full of ``<core_memory>``-style tags), read by the text tool protocol
for the tools offered, so the kernel runs them (or answers them with a function error) instead of
sending the markup to the user as the answer."""

from __future__ import annotations

from pathlib import Path

import pytest

from vmem.kernel import Memory
from vmem.kernel.drivers import parse_text_tool_calls

KNOWN = {"core_memory_append", "send_message", "conversation_search"}
# Verbatim from the trace of conv-26:3, config (d), Qwen2.5-Coder-1.5B Q4_K_M on llama.cpp.
SEEN = ('<core_memory_append label="human" content="Caroline researched the adoption agency interviews last '
        'Friday. " request_heartbeat="true"/>')


def test_the_call_the_model_wrote_is_read_with_its_arguments() -> None:
    found = parse_text_tool_calls(SEEN, known=KNOWN, only_known=True)
    assert [(c.name, c.arguments, c.error) for c in found.calls] == [
        ("core_memory_append", {"label": "human", "content": "Caroline researched the adoption agency interviews "
                                "last Friday. ", "request_heartbeat": True}, None)]
    assert found.text is None


def test_an_element_with_a_close_tag_and_text_around_it() -> None:
    text = ("Let me look.\n<conversation_search query=\"adoption &amp; agencies\" page='0'></conversation_search>"
            "\nThen I answer.")
    found = parse_text_tool_calls(text, known=KNOWN)
    assert [(c.name, c.arguments) for c in found.calls] == [
        ("conversation_search", {"query": "adoption & agencies", "page": "0"})]
    assert found.text == "Let me look.\n\nThen I answer."


# Verbatim from the OpenAI Agents SDK example (examples/agents_sdk_mcp.py) with a few-shot prompt, the
# same model: the arguments as child elements.
SEEN_CHILDREN = ("<core_memory_append>\n<label>human</label>\n<content>My dog is called Rex.</content>\n"
                 "</core_memory_append>")


def test_arguments_written_as_child_elements() -> None:
    found = parse_text_tool_calls(SEEN_CHILDREN, known=KNOWN, only_known=True)
    assert [(c.name, c.arguments, c.error) for c in found.calls] == [
        ("core_memory_append", {"label": "human", "content": "My dog is called Rex."}, None)]
    assert found.text is None
    mixed = parse_text_tool_calls('Saving. <conversation_search query="dogs"><page>1</page> </conversation_search>',
                                  known=KNOWN)
    assert [(c.name, c.arguments) for c in mixed.calls] == [("conversation_search", {"query": "dogs", "page": "1"})]
    assert mixed.text == "Saving."


# Verbatim, the same example and model, another run: the name and the arguments as elements, in a list.
SEEN_NAMED = ("<tools>\n  <function>\n    <name>core_memory_append</name>\n    <arguments>\n      <label>human</label>\n"
              "      <content>I moved to Porto last month.</content>\n    </arguments>\n  </function>\n</tools>")


def test_a_function_element_naming_the_call() -> None:
    found = parse_text_tool_calls(SEEN_NAMED, known=KNOWN, only_known=True)
    assert [(c.name, c.arguments) for c in found.calls] == [
        ("core_memory_append", {"label": "human", "content": "I moved to Porto last month."})]
    assert found.text is None  # the list element around it went with it
    other = "Sure <function><name>send_mail</name><arguments><to>ana</to></arguments></function>"
    assert parse_text_tool_calls(other, known=KNOWN, only_known=True).calls == []  # not a tool offered


@pytest.mark.parametrize("text", [
    "<core_memory_append><label>human</label> and text <content>x</content></core_memory_append>",  # prose inside
    "<core_memory_append><content><b>x</b></content></core_memory_append>",  # an element holding elements
    "<core_memory_append></core_memory_append>",  # no arguments at all
    "<send_message><message>hi</message>",  # never closed
])
def test_elements_that_are_not_a_call_with_arguments_stay_text(text: str) -> None:
    found = parse_text_tool_calls(text, known=KNOWN, only_known=True)
    assert found.calls == [] and found.text == text.strip()


@pytest.mark.parametrize("text", [
    "<core_memory_append / core_memory_replace>",  # names, no arguments: not a call
    '<b class="x">bold</b> and <send_mail to="ana"/>',  # HTML, and a tool not offered
    '<core_memory>\n<human chars="0/2000">\n\n</human>\n</core_memory>',  # the context's own markup
    '<send_message message="hi">some text</send_message>',  # an element with text is not a call
])
def test_tags_that_are_no_call_of_an_offered_tool_stay_text(text: str) -> None:
    found = parse_text_tool_calls(text, known=KNOWN, only_known=True)
    assert found.calls == [] and found.text == text.strip()


def test_without_the_tools_offered_no_tag_is_a_call() -> None:
    assert parse_text_tool_calls(SEEN).calls == []


def test_a_json_call_wins_over_tags_in_the_same_text() -> None:
    text = '{"function": "send_message", "arguments": {"message": "hi"}}\n' + SEEN
    found = parse_text_tool_calls(text, known=KNOWN)
    assert [c.name for c in found.calls] == ["send_message"]


def test_an_own_loop_runs_the_tag_call_and_the_fact_is_saved(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "m", system="s", blocks={"human": ""}) as memory:
        memory.append({"role": "user", "content": "I research adoption agencies."})
        reply = memory.assistant_message({"role": "assistant", "content": SEEN})
        assert [c["function"]["name"] for c in reply["tool_calls"]] == ["core_memory_append"]
        memory.append(reply)
        record = memory.execute(reply["tool_calls"][0])
        assert record.ok, record.result
        assert "adoption agency interviews" in memory.block("human").value
        memory.check()


class _CountingText(str):
    """A completion's text that counts the searches for a closing tag made in it."""

    closes_sought = 0

    def find(self, sub, *args):  # type: ignore[override]
        if sub.startswith("</"):
            type(self).closes_sought += 1
        return super().find(sub, *args)


@pytest.mark.parametrize("opening", ["<function><name>core_memory_append</name><arguments>",
                                     '<core_memory_append label="human">', "<send_message><message>"])
def test_many_openings_without_a_close_cost_one_search_each_kind(opening: str) -> None:
    """A hostile answer of thousands of openings and no close: each closing tag is looked for once,
    not once per opening to the end of the text (which made 260 kB take 15 s)."""
    _CountingText.closes_sought = 0
    text = _CountingText(opening * 5000)
    assert parse_text_tool_calls(text, known=KNOWN, only_known=True).calls == []
    assert _CountingText.closes_sought <= 2
