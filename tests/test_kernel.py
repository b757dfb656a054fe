"""The kernel: lifecycle, memory functions, bad input from the LLM, limits, async, replay."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vmem.kernel import (Agent, ContextWindowError, FunctionError, KernelError, MemoryConfig, MessageError,
                         ReadOnlyError, read_trace,
                         StepRules, memory_function, replay)
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.drivers import Completion, DriverError, DriverTimeoutError, ScriptedDriver, ToolCall
from vmem.kernel.functions import check_arguments
from kernel_helpers import ChattyPolicy, call, check_agent
from vmem import Region
from vmem.storage import StoreNotFoundError, open_store

BLOCKS = {"human": "", "persona": "I am a careful assistant.",
          "rules": {"value": "Never share secrets.", "read_only": True, "limit": 100}}


def new_agent(path, script, max_steps=8, **config):
    return Agent.create(path, system="You are a test agent.", blocks=BLOCKS, driver=ScriptedDriver(script),
                        config=MemoryConfig(**{"window": 4608, **config}), rules=StepRules(max_steps=max_steps))


def result_of(step, i=0):
    return json.loads(step.calls[i].result)


# ---------------------------------------------------------------- lifecycle


def test_create_step_reopen_keeps_everything(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="human", content="Name: Ana")]),
        Completion(tool_calls=[call("archival_memory_insert", heartbeat=True, content="Ana surfs in Carcavelos",
                                    tags=["hobby"])]),
        Completion(tool_calls=[call("send_message", message="Hi Ana!")]),
    ])
    result = agent.step("Hi, I'm Ana and I surf.")
    assert result.replies == ["Hi Ana!"] and result.steps == 3
    assert [c.ok for c in result.calls] == [True, True, True]
    digest = agent.memory.digest()
    agent.close()
    again = Agent.open(place("a"), driver=ScriptedDriver([]))
    assert again.memory.digest() == digest
    assert "Name: Ana" in again.memory.store.blocks.get("human").value
    assert again.memory.store.archival.search("surf", mode="text").total == 1
    check_agent(again)
    again.close()


def test_reopen_in_another_process_gives_the_same_digest(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="human", content="likes tea")]),
        Completion(tool_calls=[call("send_message", message="noted")]),
    ])
    agent.step("I like tea")
    digest = agent.memory.digest()
    agent.close()
    code = textwrap.dedent(f"""
        from vmem.kernel import Agent
        from vmem.kernel.drivers import ScriptedDriver
        agent = Agent.open({str(place("a"))!r}, driver=ScriptedDriver([]))
        print(agent.memory.digest())
        agent.close()
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == digest


def test_create_refuses_an_existing_agent_and_open_needs_one(place):
    new_agent(place("a"), []).close()
    with pytest.raises(KernelError, match="holds an agent already"):
        new_agent(place("a"), [])
    with pytest.raises(StoreNotFoundError, match="no vmem (store|agent)"):
        Agent.open(place("missing"), driver=ScriptedDriver([]))


def test_system_and_core_memory_larger_than_the_window_is_a_clear_error(place):
    with pytest.raises(ContextWindowError, match=r"the system instructions \(\d+\).* need a window of at least"):
        Agent.create(place("a"), system="word " * 5000, blocks={}, driver=ScriptedDriver([]),
                     config=MemoryConfig(window=4608))


# ---------------------------------------------------------------- memory functions


def test_schemas_come_from_signatures_and_docstrings():
    schemas = {f.name: f.schema for f in BUILTINS}
    assert set(schemas) == {"send_message", "core_memory_append", "core_memory_replace", "memory_insert",
                            "memory_rethink", "archival_memory_insert", "archival_memory_update",
                            "archival_memory_search", "conversation_search"}
    search = schemas["archival_memory_search"]["parameters"]
    assert search["required"] == ["query"]
    assert search["properties"]["tags"] == {"type": "array", "items": {"type": "string"},
                                            "description": "only passages with these tags."}
    assert search["properties"]["tags_match"]["enum"] == ["any", "all"]
    assert all("request_heartbeat" in s["parameters"]["properties"] for s in schemas.values())


def test_core_memory_edits(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("core_memory_append", label="human", content="line one"),
                               call("core_memory_append", label="human", content="line three"),
                               call("memory_insert", label="human", content="line two", insert_line=1),
                               call("core_memory_replace", label="human", old_content="three", new_content="3"),
                               call("memory_rethink", label="persona", new_memory="I am terse.")]),
        Completion(text="done"),
    ])
    result = agent.step("edit")
    assert all(c.ok for c in result.calls), [c.result for c in result.calls]
    assert agent.memory.store.blocks.get("human").value == "line one\nline two\nline 3"
    assert agent.memory.store.blocks.get("persona").value == "I am terse."
    core_text = next(m["content"] for m in agent.memory.compile() if m["content"].startswith("<core_memory>"))
    assert "line two" in core_text and 'chars="24/2000"' in core_text
    check_agent(agent)
    agent.close()


@pytest.mark.parametrize("bad, message", [
    (ToolCall("x1", "archival_memory_insert", None, error="Expecting ',' delimiter: line 1 column 12"),
     "could not parse the arguments"),
    (call("teleport", where="moon"), "no function 'teleport'"),
    (call("core_memory_append", label="human"), "missing required argument(s) content"),
    (call("core_memory_append", label="human", content=5), "argument content must be a string"),
    (call("core_memory_append", label="human", content="x", colour="red"), "unknown argument(s) colour"),
    (call("core_memory_replace", label="human", old_content="absent", new_content="y"), "occurs 0 times"),
    (call("core_memory_replace", label="persona", old_content="a", new_content="b"), "occurs 5 times"),
    (call("core_memory_append", label="nope", content="x"), "no core memory block 'nope'"),
    (call("core_memory_append", label="rules", content="x"), "read-only"),
    (call("core_memory_append", label="human", content="x" * 2001), "exceeds its limit of 2000"),
    (call("memory_insert", label="human", content="x", insert_line=9), "insert_line must be"),
    (call("archival_memory_search", query="x", start_date="yesterday"), "YYYY-MM-DD"),
    (call("archival_memory_search", query="x", tags_match="some"), "must be one of"),
    (call("conversation_search", page=-1), "page"),
])
def test_bad_calls_become_function_errors_and_the_agent_goes_on(place, bad, message):
    agent = new_agent(place("a"), [Completion(tool_calls=[bad]), Completion(text="sorry, fixed")])
    before = {b.label: b.value for b in agent.memory.store.blocks.all()}
    result = agent.step("do something")
    assert result.calls[0].ok is False
    assert message in result_of(result)["message"]
    assert result.replies == ["sorry, fixed"]  # a failed call chains a step
    assert {b.label: b.value for b in agent.memory.store.blocks.all()} == before
    check_agent(agent)
    agent.close()


def test_heartbeats_chain_up_to_max_steps(place):
    loop = [Completion(tool_calls=[call("conversation_search", heartbeat=True, query=f"x{i}", cid=f"c{i}")])
            for i in range(3)]
    agent = new_agent(place("a"), loop, max_steps=3)
    result = agent.step("loop forever")
    assert result.steps == 3 and result.stopped == "max_steps"
    check_agent(agent)
    agent.close()


def test_user_functions_with_a_decorator(place):
    @memory_function
    def add_numbers(a: int, b: int = 1) -> str:
        """Add two numbers.

        Args:
            a: the first number.
            b: the second number.
        """
        return str(a + b)

    agent = Agent.create(place("a"), system="s", blocks={}, functions=[add_numbers],
                         driver=ScriptedDriver([Completion(tool_calls=[call("add_numbers", heartbeat=True, a=2, b=3)]),
                                                Completion(text="5")]),
                         config=MemoryConfig(window=4608))
    assert add_numbers.schema["parameters"]["required"] == ["a"]
    result = agent.step("2+3?")
    assert result_of(result)["message"] == "5"
    agent.close()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["query", "tags", "page", "start_date", "request_heartbeat", "junk"]),
                       st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(),
                                 st.lists(st.one_of(st.text(), st.integers())))))
def test_argument_checking_never_raises_anything_but_function_errors(arguments):
    func = next(f for f in BUILTINS if f.name == "archival_memory_search")
    try:
        kwargs = check_arguments(func, arguments)
    except FunctionError as exc:
        assert str(exc).startswith("bad call to archival_memory_search")
    else:
        assert set(kwargs) <= {"query", "tags", "page", "start_date"}


# ---------------------------------------------------------------- page faults


def test_archival_search_pages_results_into_the_working_set(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("archival_memory_insert", content=f"fact {i}: the code word is w{i}",
                                    cid=f"i{i}") for i in range(5)]),  # no heartbeat: the step ends
        Completion(tool_calls=[call("archival_memory_search", heartbeat=True, query="code word w3")]),
        Completion(text="w3"),
    ], window=8192)  # room for the results: this test is about paging, not pressure
    agent.step("remember these")
    result = agent.step("what was the third code word?")
    ws = next(m["content"] for m in agent.memory.compile() if m["content"] and m["content"].startswith("<working_set"))
    assert "w3" in ws
    assert "(in context)" in result_of(result)["message"]
    assert agent.memory.ctx.stats().pages[Region.WORKSET] >= 1
    check_agent(agent)
    agent.close()


def test_prefetch_pages_relevant_passages_in_without_a_call(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("archival_memory_insert", content="Ines is allergic to peanuts")]),
        Completion(text="ok"),
        Completion(text="peanuts"),
    ], prefetch=2)
    agent.step("note this")
    result = agent.step("what is Ines allergic to?")
    assert result.paged_in
    ws = agent.memory.compile()[-1]["content"]
    assert ws.startswith("<working_set") and "peanuts" in ws
    agent.close()


def test_prefetch_pages_in_the_reply_to_a_matching_question_though_it_shares_no_word(place):
    """Prefetch reads recall storage with the matches' neighbours: the reply that answers an old
    question comes in with it ("They were scared..." shares no word with the new question)."""
    import datetime as dt

    t0 = dt.datetime(2023, 5, 8, 13, 0, tzinfo=dt.timezone.utc)
    agent = new_agent(place("a"), [Completion(text="They were scared but reassured.")], prefetch=2)
    agent.memory.import_history([
        ({"role": "user", "content": "How did the kids handle the accident?"}, t0),
        ({"role": "assistant", "content": "They were scared but we reassured them."}, t0 + dt.timedelta(minutes=1)),
    ])
    result = agent.step("How did Melanie's children handle the accident?")
    lines = [agent.memory.workset.lines[p] for p in result.paged_in]
    assert any("They were scared but we reassured them." in line for line in lines)
    check_agent(agent)
    agent.close()


def test_prefetch_for_searches_for_the_users_words_not_the_apps_wrapper(place):
    """An app that wraps the user's words in its own instructions names what prefetch searches
    for; the trace keeps it, so a replay pages in the same pages (equal digests)."""
    notes = [f"Reply shortly, in one word, with exact words: style note {n}" for n in range(6)]  # the wrapper's
    script = [Completion(tool_calls=[call("archival_memory_insert", content=text)
                                     for text in ["Ines is allergic to peanuts", *notes]]),
              Completion(text="ok"), Completion(text="peanuts"), Completion(text="peanuts")]
    agent = new_agent(place("a"), script, prefetch=1)
    agent.step("note this")
    wrapper = "Reply shortly, in one word, with exact words. {q}"
    plain = agent.step(wrapper.format(q="Ines?"))
    assert plain.paged_in and not any("peanuts" in line for line in agent.memory.workset.lines.values())
    named = agent.step(wrapper.format(q="Ines?"), prefetch_for="what is Ines allergic to?")
    assert any("peanuts" in agent.memory.workset.lines[p] for p in named.paged_in)
    users = [e for e in read_trace(agent.memory.store) if e["e"] == "user"]
    assert "prefetch_for" not in users[1] and users[2]["prefetch_for"] == "what is Ines allergic to?"
    with pytest.raises(MessageError, match="prefetch_for is for a user message"):
        agent.memory.append({"role": "system", "content": "x"}, prefetch_for="y")
    with pytest.raises(TypeError, match="prefetch_for must be text"):
        agent.memory.append({"role": "user", "content": "x"}, prefetch_for=3)
    digest = agent.memory.digest()
    check_agent(agent)
    agent.close()
    again = replay(place("a"), place("b"))
    assert again.memory.digest() == digest
    again.close()


# ---------------------------------------------------------------- oversize input


def test_a_user_message_larger_than_the_window_is_stored_and_summarized(place):
    policy = ChattyPolicy()
    agent = Agent.create(place("a"), system="s", blocks={}, driver=ScriptedDriver(policy),
                         config=MemoryConfig(window=4096, reserve_output=512))
    huge = " ".join(f"word{i}" for i in range(12000))
    result = agent.step(huge)
    assert result.replies
    assert len(policy.summary_requests) >= 2  # chunked: no summarizer input exceeds the window
    assert all(len(r) < 4096 * 4 for r in policy.summary_requests)
    stored = agent.memory.store.recall.search("word11999", page_size=5)
    assert stored.total == 1 and stored.items[0].content == huge  # verbatim, not truncated
    assert any("too large for the context window" in (m["content"] or "") for m in agent.memory.compile())
    check_agent(agent)
    agent.close()


# ---------------------------------------------------------------- async, replay


def test_astep_runs_the_same_loop(place):
    agent = new_agent(place("a"), [
        Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="human", content="async")]),
        Completion(tool_calls=[call("send_message", message="done")]),
    ])
    result = asyncio.run(agent.astep("hello"))
    assert result.replies == ["done"] and agent.memory.store.blocks.get("human").value == "async"
    agent.close()


def test_replaying_the_trace_rebuilds_the_same_state(place):
    agent = Agent.create(place("a"), system="s", blocks={"human": ""}, driver=ScriptedDriver(ChattyPolicy()),
                         config=MemoryConfig(window=3584, reserve_output=128, prefetch=1))
    for i in range(40):
        agent.step(f"message {i}: " + "some words here " * (i % 7))
    digest = agent.memory.digest()
    assert agent.memory.state.folds >= 2
    agent.close()
    again = replay(place("a"), place("b"))
    assert again.memory.digest() == digest
    again.close()


@pytest.mark.parametrize("error", [DriverTimeoutError("timed out after 30 s"),
                                   DriverError("server error 500 after 4 attempts", status=500)])
def test_a_driver_failure_surfaces_and_leaves_the_memory_as_before_the_step(place, error):
    agent = new_agent(place("a"), [Completion(tool_calls=[call("send_message", message="hi")]),
                                       Completion(tool_calls=[call("core_memory_append", heartbeat=True,
                                                                   label="human", content="half")]),
                                       error])
    agent.step("first")
    before = agent.memory.digest()
    with pytest.raises(DriverError):
        agent.step("second")  # the block edit of its first LLM call is undone with the rest
    check_agent(agent)
    assert agent.memory.digest() == before
    agent.close()
    again = Agent.open(place("a"), driver=ScriptedDriver([Completion(text="back")]))
    assert again.memory.digest() == before
    assert [m["content"] for m in again.memory.compile() if m["role"] == "user"] == ["first"]
    assert again.step("second").replies == ["back"]  # the same message can be sent again
    check_agent(again)
    again.close()


def test_a_failed_create_leaves_nothing_behind(place, store_kind):
    # the tool schemas alone do not fit; the error names the smallest window they need
    with pytest.raises(ContextWindowError, match=r"window of at least \d+ tokens"):
        Agent.create(place("x"), system="s", blocks={"human": ""}, driver=ScriptedDriver([]),
                     config=MemoryConfig(window=600, reserve_output=100))
    with pytest.raises(StoreNotFoundError):  # not even an empty store (a directory, or the agent's row)
        open_store(place("x"), create=False)
    if store_kind == "dir":
        assert not place("x").exists()
    agent = Agent.create(place("x"), system="s", blocks={"human": ""}, driver=ScriptedDriver([]),
                         config=MemoryConfig(window=4608))
    agent.close()
    assert Agent.exists(place("x")) and not Agent.exists(place("nothing"))


def test_read_only_open_saves_nothing_and_cannot_step(place):
    agent = new_agent(place("a"), [Completion(tool_calls=[call("send_message", message="hi")])])
    agent.step("hello")
    digest = agent.memory.digest()
    agent.close()
    view = Agent.open(place("a"), driver=ScriptedDriver([]), read_only=True)
    assert view.memory.summary == "" and view.memory.evicted == 0
    with pytest.raises(ReadOnlyError, match="read-only"):
        view.step("no")
    view.close()
    assert Agent.open(place("a"), driver=ScriptedDriver([])).memory.digest() == digest
