"""The Letta agent file (.af) format layer: the eight published files, bad files, round trips.

The real files ship in ``tests/data/letta`` (Apache-2.0, their LICENSE beside them;
``$VMEM_LETTA_FILES`` names another folder), so a fresh clone tests them; every other test
builds its own small file.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]

from vmem.app.agentfile import writing as af_writing
from vmem.app.agentfile import (
    DEFAULT_MAX_BYTES,
    EXTENSION_KEY,
    VMEM_BUILTINS,
    AgentFile,
    AgentFileError,
    AgentFileTooLarge,
    AgentSpec,
    ArchivalPassage,
    BlockSpec,
    BrokenReference,
    ChatMessage,
    GroupSpec,
    NotAnAgentFile,
    ToolCall,
    ToolRule,
    ToolSpec,
    builtin_tool,
    dump_agent_file,
    read_agent_file,
    write_agent_file,
)

UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)

LETTA_FILES = Path(os.environ.get("VMEM_LETTA_FILES") or ROOT / "tests" / "data" / "letta")  # shipped: Apache-2.0
EIGHT = ["memgpt_agent.af", "memgpt_agent_with_convo.af", "customer_service.af", "deep_research_agent.af",
         "outreach_workflow_agent.af", "evie.af", "loop.af", "lettabot.af"]


def real(name: str) -> Path:
    """A published agent file, or a skip saying where it was looked for."""
    path = LETTA_FILES / name
    if not path.is_file():
        pytest.fail(f"Letta agent file {name} not found in {LETTA_FILES}: the repository ships it in tests/data/letta "
                    "(VMEM_LETTA_FILES names another folder)")
    return path


# ---------------------------------------------------------------- checks every import must pass

def check_messages(msgs: tuple[ChatMessage, ...], where: str, orphans: set[str] = frozenset()) -> None:
    """Roles, text, aware UTC times; each call answered right after it, in order; no stray
    result but the ``orphans`` (ids of results whose call the file lacks, allowed in recall)."""
    i = 0
    while i < len(msgs):
        m = msgs[i]
        assert m.role in ("system", "user", "assistant", "tool"), (where, i, m.role)
        assert isinstance(m.content, str), (where, i)
        assert m.timestamp.tzinfo is not None and m.timestamp.utcoffset() == dt.timedelta(0), (where, i)
        assert m.role != "tool" or m.tool_call_id in orphans, f"{where}[{i}]: a tool result without its call"
        i += 1
        for call in m.tool_calls:
            assert m.role == "assistant", (where, i)
            assert i < len(msgs), f"{where}: call {call.id} has no result"
            r = msgs[i]
            assert r.role == "tool" and r.tool_call_id == call.id, f"{where}[{i}]: expected the result of {call.id}"
            assert r.name == call.name
            i += 1


def check_import(af: AgentFile) -> None:
    for a in af.agents:
        check_messages(a.in_context, f"{a.id}.in_context")
        reported = {m.tool_call_id for m in a.out_of_context if m.role == "tool" and
                    f"a result for call {m.tool_call_id}, which no message makes" in af.report.format()}
        check_messages(a.out_of_context, f"{a.id}.out_of_context", reported)
        labels = [b.label for b in a.blocks]
        assert len(labels) == len(set(labels)), a.id
        for b in a.blocks:
            assert a.id in b.shared_by or not b.id


LETTA_ID = re.compile(r"^(agent|block|tool|message|group)-\d+$")
LETTA_NAME = re.compile(r"^[\w '\-]+$")
TOOL_FIELDS = {"id", "tool_type", "description", "source_type", "name", "tags", "source_code", "json_schema",
               "args_json_schema", "return_char_limit", "pip_requirements", "npm_requirements",
               "default_requires_approval", "enable_parallel_execution", "created_by_id", "last_updated_by_id",
               "metadata_", "project_id"}


def check_letta_shape(doc: dict[str, Any]) -> None:
    """What Letta's AgentFileSchema and its importer require of a document (read from its pydantic
    models and services/agent_serialization_manager.py): required lists, ``prefix-N`` ids unique
    across the file, references that resolve, tools without extra fields, an llm_config."""
    for key in ("agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers"):
        assert isinstance(doc[key], list), key
    ids: list[str] = []
    for key in ("agents", "groups", "blocks", "tools"):
        ids += [x["id"] for x in doc[key]]
    for a in doc["agents"]:
        ids += [m["id"] for m in a["messages"]]
    assert all(LETTA_ID.match(i) for i in ids), [i for i in ids if not LETTA_ID.match(i)]
    assert len(ids) == len(set(ids)), "duplicate ids"
    blocks = {b["id"] for b in doc["blocks"]}
    tools = {t["id"] for t in doc["tools"]}
    agents = {a["id"] for a in doc["agents"]}
    for t in doc["tools"]:
        assert set(t) <= TOOL_FIELDS, set(t) - TOOL_FIELDS
    for b in doc["blocks"]:
        assert isinstance(b["label"], str) and isinstance(b["value"], str) and isinstance(b["limit"], int)
    for a in doc["agents"]:
        assert LETTA_NAME.match(a["name"]), a["name"]
        assert set(a["block_ids"]) <= blocks and set(a["tool_ids"]) <= tools
        cfg = a["llm_config"]
        assert isinstance(cfg["model"], str) and isinstance(cfg["model_endpoint_type"], str)
        assert isinstance(cfg["context_window"], int)
        mids = {m["id"] for m in a["messages"]}
        assert set(a["in_context_message_ids"]) <= mids
        first = next(m for m in a["messages"] if m["id"] == a["in_context_message_ids"][0])
        assert first["role"] == "system"
        for m in a["messages"]:
            assert m["role"] in ("system", "user", "assistant", "tool") and isinstance(m["content"], list)
            dt.datetime.fromisoformat(m["created_at"])
            if m["role"] == "tool":
                assert m["tool_returns"][0]["tool_call_id"] == m["tool_call_id"]
    for g in doc["groups"]:
        assert set(g["agent_ids"]) <= agents
    assert isinstance(doc[EXTENSION_KEY], dict)
    json.dumps(doc)


# ---------------------------------------------------------------- the eight published files

@pytest.mark.parametrize("name", EIGHT)
def test_real_file_imports_cleanly(name: str) -> None:
    af = read_agent_file(real(name))
    check_import(af)
    assert af.agents and not af.report.warnings, af.report.format()
    text = af.report.format()
    for a in af.agents:
        assert a.system is not None and a.context_window and a.context_window > 0
        for t in a.tools:  # every tool is accounted for, mapped or kept
            assert f"tool {t.name}:" in text
        assert af.report.stats[a.id]["compiled_prompts"] == 1  # Letta's rendered prompt, not imported


@pytest.mark.parametrize("name", EIGHT)
def test_real_file_round_trip(name: str, tmp_path: Path) -> None:
    af = read_agent_file(real(name))
    doc = write_agent_file(af)
    check_letta_shape(doc)
    out = tmp_path / name
    dump_agent_file(af, out)
    again = read_agent_file(out)
    assert again == af
    assert not again.report.warnings
    assert again.report.select("note", None) == []  # our own output needs no decoding notes


@pytest.mark.parametrize("name", ["memgpt_agent.af", "customer_service.af", "outreach_workflow_agent.af"])
def test_double_encoded_files_are_decoded_with_a_note(name: str) -> None:
    raw = json.loads(real(name).read_text())
    assert isinstance(raw, str)
    af = read_agent_file(real(name))
    assert [e.subject for e in af.report.select("note", None)] == ["double-encoded JSON"]


def test_evie_two_agents_share_twelve_blocks_and_a_sleeptime_group() -> None:
    af = read_agent_file(real("evie.af"))
    main, sleeper = af.agent("agent-0"), af.agent("agent-1")
    assert (main.name, sleeper.agent_type) == ("Evie", "sleeptime_agent")
    shared = [b for b in main.blocks if b.shared_by == ("agent-0", "agent-1")]
    assert len(shared) == 12 and len(main.blocks) == 12 and len(sleeper.blocks) == 13
    assert {b.id for b in shared} <= {b.id for b in sleeper.blocks}
    assert sleeper.block("memory_persona").shared_by == ("agent-1",)
    assert sum(b.read_only for b in main.blocks) == 4
    assert af.groups == (GroupSpec("group-0", ("agent-1",), "sleeptime", "agent-0",
                                   config={"sleeptime_agent_frequency": 5}),)
    assert [m.kind for m in sleeper.in_context] == ["login"]
    assert len(af.blocks) == 13  # the file's blocks, once each
    assert "shared with agent-1" in af.report.format()


def test_loop_replies_through_send_message() -> None:
    a = read_agent_file(real("loop.af")).agents[0]
    call, result = a.in_context
    assert call.role == "assistant" and call.reply == "I'm Loop. I remember. What's on your mind?"
    assert result.tool_call_id == call.tool_calls[0].id and result.name == "send_message"
    assert json.loads(result.content)["status"] == "OK"
    assert [t.builtin for t in a.tools if t.name == "memory_insert"] == ["memory_insert"]
    note = next(t for t in a.tools if t.name == "note")
    assert note.builtin is None and note.source_code and note.tool_type == "custom"


def test_letta_tool_arguments_renamed_over_time_still_map() -> None:
    a = read_agent_file(real("customer_service.af")).agents[0]
    replace_tool = next(t for t in a.tools if t.name == "memory_replace")
    assert replace_tool.parameters == ("label", "old_str", "new_str")
    m = replace_tool.mapping
    assert m is not None and m.builtin == "core_memory_replace" and not m.exact
    assert m.renamed == (("old_str", "old_content"), ("new_str", "new_content")) and m.unsupported == ()
    search = next(t for t in a.tools if t.name == "conversation_search").mapping
    assert search is not None and search.unsupported == ("limit",)
    custom = [t for t in a.tools if t.tool_type == "custom"]
    assert {t.name for t in custom} == {"terminate_chat", "escalate", "cancel_order", "check_order_status"}
    assert all(t.source_code and t.json_schema and t.builtin is None for t in custom)


def test_deep_research_keeps_tools_vmem_cannot_run() -> None:
    af = read_agent_file(real("deep_research_agent.af"))
    a = af.agents[0]
    assert a.block("persona").read_only
    by_name = {t.name: t for t in a.tools}
    assert by_name["memory"].builtin is None  # Letta's path-based omni tool has no vmem equivalent
    assert by_name["web_search"].tool_type == "letta_builtin"
    kept = {e.subject for e in af.report.select("kept", "agent-0")}
    assert {"tool memory", "tool web_search", "tool create_research_plan", "tool reset_research"} <= kept


def test_outreach_has_no_blocks_and_an_empty_system_prompt() -> None:
    a = read_agent_file(real("outreach_workflow_agent.af")).agents[0]
    assert a.system == "" and a.blocks == () and len(a.tools) == 4 and len(a.tool_rules) == 5


def test_lettabot_skills_are_reported_not_imported() -> None:
    af = read_agent_file(real("lettabot.af"))
    skipped = {e.subject: e.detail for e in af.report.select("skipped", None)}
    assert skipped["skills"].startswith("46 (voice-memo, ")
    assert "tools: created_by_id (x2)" in skipped["Letta bookkeeping"]  # server ids, listed not silently dropped
    assert af.agents[0].block("system/persona/soul").limit == 50000


# ---------------------------------------------------------------- small files built here

def msg(mid: str, role: str, text: str | list | None = "", t: int = 0, **kw: Any) -> dict[str, Any]:
    """A Letta message; ``t`` is seconds after T0."""
    content = [{"type": "text", "text": text}] if isinstance(text, str) else text
    return {"id": mid, "role": role, "content": content, "created_at": (T0 + dt.timedelta(seconds=t)).isoformat(),
            **kw}


def call(cid: str, name: str, **args: Any) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def result(mid: str, cid: str, text: str = '{"status": "OK", "message": "None"}', t: int = 0, **kw: Any) -> dict:
    return msg(mid, "tool", text, t, tool_call_id=cid,
               tool_returns=[{"tool_call_id": cid, "status": "success", "func_response": text}], **kw)


def envelope(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields, "time": "2025-03-01 12:00:00 PM UTC+0000"}, indent=2)


def summary_text(body: str) -> str:
    return envelope("system_alert", message="Note: prior messages (40 of 52 total messages) have been hidden from "
                    f"view due to conversation memory constraints.\nThe following is a summary of the previous 38 "
                    f"messages:\n {body}")


def agent(messages: list[dict] | None = None, in_context: list[str] | None = None, **kw: Any) -> dict[str, Any]:
    messages = messages if messages is not None else [msg("message-0", "system", "You are Sam.\n<memory_blocks>")]
    doc = {"id": "agent-0", "name": "sam", "system": "You are Sam.", "agent_type": "memgpt_agent",
           "llm_config": {"model": "gpt-4o-mini", "model_endpoint_type": "openai", "context_window": 8192},
           "block_ids": [], "tool_ids": [], "tool_rules": [], "messages": messages,
           "in_context_message_ids": in_context if in_context is not None else [m["id"] for m in messages]}
    doc.update(kw)
    return doc


def document(*agents: dict, blocks: list | None = None, tools: list | None = None, **kw: Any) -> dict[str, Any]:
    doc = {"agents": list(agents) or [agent()], "groups": [], "blocks": blocks or [], "files": [], "sources": [],
           "tools": tools or [], "mcp_servers": [], "metadata": {"revision_id": "abc"},
           "created_at": T0.isoformat()}
    doc.update(kw)
    return doc


def read(doc: Any) -> AgentFile:
    """Read a document given as a dict (or raw text/bytes) and check the import invariants."""
    data = doc if isinstance(doc, bytes) else (doc if isinstance(doc, str) else json.dumps(doc)).encode()
    out = read_agent_file(data)
    check_import(out)
    return out


def test_minimal_file() -> None:
    af = read(document())
    a = af.agents[0]
    assert (a.id, a.name, a.system, a.context_window, a.model) == ("agent-0", "sam", "You are Sam.", 8192,
                                                                   "gpt-4o-mini")
    assert a.in_context == () and a.summary == "" and not af.report.warnings
    assert af.created_at == T0 and af.metadata == {"revision_id": "abc"}


def test_context_window_limit_wins_over_llm_config() -> None:
    assert read(document(agent(context_window_limit=4000))).agents[0].context_window == 4000


def test_summary_message_becomes_the_summary() -> None:
    msgs = [msg("message-0", "system", "You are Sam."), msg("message-1", "user", "hello", 1),
            msg("message-2", "user", summary_text("Sarah likes sailing."), 9), msg("message-3", "user", "hi again", 5)]
    af = read(document(agent(msgs, ["message-0", "message-2", "message-3"])))
    a = af.agents[0]
    assert a.summary == "Sarah likes sailing."
    assert [m.content for m in a.in_context] == ["hi again"]
    assert [m.content for m in a.out_of_context] == ["hello"]
    assert "summary message message-2" in af.report.format()


def test_summary_role_of_newer_letta() -> None:
    body = envelope("system_alert", message="Note: prior messages have been hidden from view due to conversation "
                    "memory constraints.\nThe following is a summary of the previous messages:\n # Summary\nAll good.")
    af = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "summary", body)])))
    assert af.agents[0].summary == "# Summary\nAll good." and af.agents[0].in_context == ()
    plain = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "summary", "Just text.")])))
    assert plain.agents[0].summary == "Just text."


def test_sliding_window_summary() -> None:
    body = envelope("system_alert", message="Note: 12 messages from the beginning of the conversation have been "
                    "hidden from view due to memory constraints.\nThe following is a summary of the previous "
                    "messages:\n They talked about boats.", compaction_stats={"messages_count_before": 30})
    a = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "summary", body)]))).agents[0]
    assert a.summary == "They talked about boats."


def test_hidden_messages_notice_without_a_summary() -> None:
    note = envelope("system_alert", message="Note: 12 prior messages with the user have been hidden from view due "
                    "to conversation memory constraints. Older messages are stored in Recall Memory.")
    a = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "user", note)]))).agents[0]
    assert a.summary == "" and a.in_context == ()


def test_a_later_summary_stays_where_it_is_with_a_warning() -> None:
    msgs = [msg("message-0", "system", "x"), msg("message-1", "user", "hi"),
            msg("message-2", "user", summary_text("late"))]
    af = read(document(agent(msgs)))
    assert af.agents[0].summary == "" and [m.kind for m in af.agents[0].in_context] == ["message", "summary"]
    assert "a second summary in context" in af.report.format()


def test_letta_envelopes() -> None:
    msgs = [msg("message-0", "system", "You are Sam."),
            msg("message-1", "user", envelope("login", last_login="Never (first login)")),
            msg("message-2", "user", envelope("user_message", message="hi, I'm Sarah ", name="sarah")),
            msg("message-3", "assistant", "She said hi.",
                tool_calls=[call("c1", "core_memory_append", label="human", content="Sarah", request_heartbeat=True)]),
            result("message-4", "c1"),
            msg("message-5", "user", envelope("heartbeat", reason="[This is an automated system message hidden from "
                                              "the user] Function called using request_heartbeat=true")),
            msg("message-6", "assistant", "Greet her.", tool_calls=[call("c2", "send_message", message="Hi Sarah!")]),
            result("message-7", "c2"),
            msg("message-8", "user", envelope("system_alert", message="Memory is almost full."))]
    af = read(document(agent(msgs)))
    q = af.agents[0].in_context
    assert [m.kind for m in q] == ["login", "message", "message", "tool_result", "heartbeat", "message",
                                   "tool_result", "system_alert"]
    assert (q[1].content, q[1].name) == ("hi, I'm Sarah ", "sarah")  # unwrapped, verbatim
    assert q[2].content == "She said hi." and q[2].reply is None  # inner monologue
    assert q[5].reply == "Hi Sarah!"
    assert q[0].to_openai()["role"] == "user" and json.loads(q[4].content)["type"] == "heartbeat"
    stats = af.report.stats["agent-0"]
    assert (stats["unwrapped"], stats["heartbeats"], stats["logins"], stats["system_alerts"]) == (1, 1, 1, 1)


def test_compiled_system_prompts_are_dropped_everywhere() -> None:
    msgs = [msg("message-0", "system", "You are Sam.\n### Memory [last modified: ...]"),
            msg("message-1", "user", "hi"),
            msg("message-2", "system", "You are Sam.\n### Memory [later]"),
            msg("message-3", "system", envelope("system_alert", message="an operator note")),
            msg("message-4", "system", "You are Sam.\n### Memory [latest]")]
    af = read(document(agent(msgs, ["message-4", "message-1"])))
    a = af.agents[0]
    assert [m.content for m in a.in_context] == ["hi"]
    assert [m.kind for m in a.out_of_context] == ["system_alert"]  # a system message that is not the prompt stays
    assert af.report.stats["agent-0"]["compiled_prompts"] == 3


def test_tool_call_without_result_gets_a_failed_result() -> None:
    msgs = [msg("message-0", "system", "x"), msg("message-1", "user", "email Bob"),
            msg("message-2", "assistant", "", tool_calls=[call("c9", "send_email", to="bob")]),
            msg("message-3", "user", "well?")]
    af = read(document(agent(msgs)))
    q = af.agents[0].in_context
    assert [m.role for m in q] == ["user", "assistant", "tool", "user"]
    made = q[2]
    assert made.synthetic and made.tool_call_id == "c9" and made.name == "send_email"
    assert json.loads(made.content)["status"] == "Failed"
    assert q[1].to_openai() == {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c9", "type": "function", "function": {"name": "send_email", "arguments": '{"to": "bob"}'}}]}
    warning = af.report.warnings[0]
    assert warning.subject == "message message-2" and "send_email (c9) has no result" in warning.detail
    assert af.report.stats["agent-0"]["synthesized"] == 1


def test_parallel_calls_answered_by_one_tool_message_in_call_order() -> None:
    returns = [{"tool_call_id": c, "status": "success", "func_response": f"result {c}"} for c in ("b", "a")]
    msgs = [msg("message-0", "system", "x"),
            msg("message-1", "assistant", "two at once", tool_calls=[call("a", "f"), call("b", "g")]),
            msg("message-2", "user", "interleaved"),
            msg("message-3", "tool", [], tool_returns=returns)]
    q = read(document(agent(msgs))).agents[0].in_context
    assert [(m.role, m.tool_call_id, m.content) for m in q] == [
        ("assistant", None, "two at once"), ("tool", "a", "result a"), ("tool", "b", "result b"),
        ("user", None, "interleaved")]
    assert [m.name for m in q[1:3]] == ["f", "g"]


def test_results_follow_their_call_across_the_context_boundary() -> None:
    msgs = [msg("message-0", "system", "x"),
            msg("message-1", "assistant", "", tool_calls=[call("old", "f")]), result("message-2", "old"),
            msg("message-3", "assistant", "", tool_calls=[call("new", "g")]), result("message-4", "new"),
            msg("message-5", "user", "hi")]
    # context holds the result of an evicted call, and not the result of a call it holds
    af = read(document(agent(msgs, ["message-0", "message-2", "message-3", "message-5"])))
    a = af.agents[0]
    assert [(m.role, m.tool_call_id) for m in a.in_context] == [("assistant", None), ("tool", "new"), ("user", None)]
    assert [(m.role, m.tool_call_id) for m in a.out_of_context] == [("assistant", None), ("tool", "old")]
    assert af.report.stats["agent-0"]["moved"] == 2


def test_orphan_and_duplicate_results() -> None:
    msgs = [msg("message-0", "system", "x"), result("message-1", "ghost"),
            msg("message-2", "assistant", "", tool_calls=[call("c", "f")]), result("message-3", "c"),
            result("message-4", "c", "again")]
    af = read(document(agent(msgs)))
    a = af.agents[0]
    assert [(m.role, m.content) for m in a.in_context] == [("assistant", ""), ("tool", '{"status": "OK", '
                                                                                       '"message": "None"}')]
    assert [m.tool_call_id for m in a.out_of_context] == ["ghost"]  # out of the queue, still in recall
    text = af.report.format()
    assert "which no message makes; moved out of the context" in text
    assert "a second result for call c" in text


def test_approval_request_and_answer() -> None:
    msgs = [msg("message-0", "system", "x"),
            msg("message-1", "assistant", "checking", tool_calls=[call("a", "lookup")]),
            msg("message-2", "approval", [], tool_calls=[call("b", "delete_file", path="/tmp/x")]),
            msg("message-3", "approval", [], approve=True, approvals=[
                {"type": "approval", "tool_call_id": "b", "approve": True, "reason": None}]),
            result("message-4", "a"), result("message-5", "b")]
    af = read(document(agent(msgs)))
    q = af.agents[0].in_context
    assert [(m.role, [c.id for c in m.tool_calls], m.tool_call_id) for m in q] == [
        ("assistant", ["a", "b"], None), ("tool", [], "a"), ("tool", [], "b")]
    assert "1 call(s) that waited for a human" in af.report.format()


def test_content_parts() -> None:
    parts = [{"type": "reasoning", "is_native": True, "reasoning": "think", "signature": "sig"},
             {"type": "text", "text": "look"}, {"type": "image", "source": {"type": "url", "url": "http://x"}},
             {"type": "text", "text": "here"}, {"type": "redacted_reasoning", "data": "xx"},
             {"type": "hologram", "data": 1}]
    af = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "assistant", parts),
                              msg("message-2", "user", "plain string content")])))
    m, u = af.agents[0].in_context
    assert m.content == "look\n\n[image omitted]\n\nhere" and m.reasoning == "think"
    assert set(m.dropped) == {"reasoning signature", "image", "redacted reasoning", "hologram part"}
    assert u.content == "plain string content"
    skipped = {e.subject for e in af.report.select("skipped", "agent-0")}
    assert {"image", "reasoning signature", "redacted reasoning", "hologram part"} <= skipped


def test_string_content_and_tool_calls_as_content_parts() -> None:
    raw = {"id": "message-1", "role": "assistant", "created_at": T0.isoformat(),
           "content": [{"type": "tool_call", "id": "t1", "name": "f", "input": {"x": 1}}]}
    ret = {"id": "message-2", "role": "tool", "created_at": T0.isoformat(),
           "content": [{"type": "tool_return", "tool_call_id": "t1", "content": "done", "is_error": False}]}
    q = read(document(agent([msg("message-0", "system", "x"), raw, ret]))).agents[0].in_context
    assert q[0].tool_calls == (ToolCall("t1", "f", '{"x": 1}'),) and (q[1].tool_call_id, q[1].content) == ("t1", "done")


def test_legacy_single_agent_layout() -> None:
    doc = {"name": "old", "system": "You are Old.", "agent_type": "memgpt_agent", "version": "0.6.47",
           "llm_config": {"model": "gpt-4", "model_endpoint_type": "openai", "context_window": 8192},
           "core_memory": [{"label": "human", "value": "Name: Ann", "limit": 5000}],
           "tools": [{"name": "send_message", "tool_type": "letta_core", "json_schema": {
               "name": "send_message", "parameters": {"type": "object", "properties": {"message": {}}}}}],
           "messages": [{"role": "system", "content": [{"type": "text", "text": "You are Old.\nmemory"}],
                         "created_at": "2025-04-01T03:47:27"},
                        {"role": "user", "content": [{"type": "text", "text": envelope("user_message", message="hi")}],
                         "created_at": "2025-04-01T03:47:28"}],
           "in_context_message_indices": [0, 1], "tool_rules": [{"tool_name": "send_message", "type": "exit_loop"}]}
    af = read(doc)
    a = af.agents[0]
    assert (a.name, a.block("human").value, a.tools[0].builtin) == ("old", "Name: Ann", "send_message")
    assert a.in_context[0].content == "hi" and a.in_context[0].timestamp.tzinfo is not None
    assert a.tool_rules == (ToolRule("exit_loop", "send_message"),)
    assert [e.subject for e in af.report.select("note", None)] == ["legacy layout", "timestamps"]
    assert read(write_agent_file(af)) == af


def test_legacy_layout_with_a_bad_index() -> None:
    doc = {"name": "old", "system": "", "core_memory": [], "messages": [], "in_context_message_indices": [3]}
    with pytest.raises(BrokenReference, match="in_context_message_indices: 3 is not the index of a message"):
        read(doc)


# ---------------------------------------------------------------- bad files

def raises(cls: type[AgentFileError], data: Any, *fragments: str, **kw: Any) -> AgentFileError:
    payload = data if isinstance(data, (bytes, str, Path)) else json.dumps(data).encode()
    if isinstance(payload, str):
        payload = payload.encode()
    with pytest.raises(cls) as info:
        read_agent_file(payload, **kw)
    text = str(info.value)
    assert "\n" not in text, text  # one line
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    return info.value


def test_not_json() -> None:
    err = raises(NotAnAgentFile, b'{"agents": [', "<bytes>: not JSON (", "line 1 column 13")
    assert isinstance(err, ValueError)


def test_not_utf8_and_empty() -> None:
    raises(NotAnAgentFile, b"\xff\xfe{}", "not UTF-8")
    raises(NotAnAgentFile, b"  \n", "empty file")


def test_double_encoded_json_accepted_but_not_triple() -> None:
    once = json.dumps(document())
    af = read_agent_file(json.dumps(once).encode())
    assert af.agents[0].name == "sam" and af.report.select("note")[0].subject == "double-encoded JSON"
    raises(NotAnAgentFile, json.dumps(json.dumps(once)), "encoded more than twice")
    raises(NotAnAgentFile, json.dumps("just a string"), "a JSON string that does not hold JSON")


def test_wrong_top_level_shape() -> None:
    raises(NotAnAgentFile, [document()], "expected a JSON object with 'agents', got a list")
    raises(NotAnAgentFile, {"hello": 1}, "no 'agents' list: not a Letta agent file (top-level keys: hello)")
    raises(AgentFileError, {"agents": {"a": 1}}, "'agents' must be a list, got an object")
    raises(NotAnAgentFile, {"agents": [1]}, "agents[0]: must be an object, got an integer")


def test_missing_ids() -> None:
    no_id = agent()
    del no_id["id"]
    raises(BrokenReference, document(no_id), "agents[0]: missing 'id'")
    raises(BrokenReference, document(blocks=[{"label": "human", "value": ""}]), "blocks[0]: missing 'id'")
    bad_msg = agent([{"role": "user", "content": "hi"}], in_context=[])
    raises(BrokenReference, document(bad_msg), "agents[0] (agent-0).messages[0]: missing 'id'")


def test_dangling_and_duplicate_ids() -> None:
    raises(BrokenReference, document(agent(block_ids=["block-7"])),
           "agents[0] (agent-0): block_ids names block 'block-7', which the file does not define")
    raises(BrokenReference, document(agent(tool_ids=["tool-1"])), "tool_ids names tool 'tool-1'")
    raises(BrokenReference, document(agent(in_context=["message-0", "message-9"])),
           "in_context_message_ids names message 'message-9'")
    block = {"id": "block-0", "label": "human", "value": ""}
    raises(BrokenReference, document(blocks=[block, block]), "blocks[1]: id 'block-0' is used twice")
    raises(BrokenReference, document(agent(), agent()), "agent id 'agent-0' is used twice")
    two = [block, {"id": "block-1", "label": "human", "value": "x"}]
    raises(BrokenReference, document(agent(block_ids=["block-0", "block-1"]), blocks=two),
           "two blocks are labelled 'human' (block-0, block-1)")


def test_wrong_field_types() -> None:
    blocks = [{"id": "block-0", "label": "human", "value": 42}]
    raises(AgentFileError, document(agent(block_ids=["block-0"]), blocks=blocks),
           "block block-0: 'value' must be a string, got an integer")
    raises(AgentFileError, document(agent(system=["x"])), "'system' must be a string, got a list")
    bad = agent([msg("message-0", "user", None) | {"content": 5}])
    raises(AgentFileError, document(bad), "'content' must be a string or a list of parts")


def test_unknown_fields_are_warnings_not_errors() -> None:
    doc = document(agent(mood="sunny", messages=[msg("message-0", "system", "x", sparkle=1)]),
                   blocks=[{"id": "block-0", "label": "h", "value": "", "limit": 10, "colour": "red"}],
                   future_section=[])
    af = read(doc)
    subjects = {e.subject: e.detail for e in af.report.warnings}
    assert subjects["unknown fields in agents"].startswith("mood: ignored")
    assert "sparkle" in subjects["unknown fields in messages"] and "colour" in subjects["unknown fields in blocks"]
    assert "future_section" in subjects["unknown fields in the top level"]


def test_unknown_role_is_skipped_and_reported() -> None:
    af = read(document(agent([msg("message-0", "system", "x"), msg("message-1", "narrator", "Once upon a time")])))
    assert af.agents[0].in_context == ()
    assert af.report.select("skipped", "agent-0")[0].detail == "unknown role 'narrator'"


def test_size_limit_bytes_and_path(tmp_path: Path) -> None:
    data = json.dumps(document()).encode()
    raises(AgentFileTooLarge, data, f"{len(data)} bytes is over the limit of 100", max_bytes=100)
    path = tmp_path / "big.af"
    path.write_bytes(data)
    raises(AgentFileTooLarge, path, "big.af: ", "over the limit of 100 (max_bytes)", max_bytes=100)
    assert read_agent_file(path, max_bytes=len(data)).agents[0].name == "sam"


def test_hundred_megabyte_file_refused_by_its_size_before_reading(tmp_path: Path, monkeypatch) -> None:
    assert DEFAULT_MAX_BYTES < 100 * 1024 * 1024
    big = tmp_path / "huge.af"
    with open(big, "wb") as f:
        f.truncate(100 * 1024 * 1024)  # sparse: no 100 MB written to disk
    opened: list[Any] = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    raises(AgentFileTooLarge, big, "huge.af: 104857600 bytes is over the limit of 67108864")
    assert opened == []  # refused from the file's size alone


def test_size_limit_holds_for_a_stream_with_no_size() -> None:
    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero here")
    raises(AgentFileTooLarge, Path("/dev/zero"), "more than 4096 bytes", max_bytes=4096)


def test_unreadable_paths(tmp_path: Path) -> None:
    raises(AgentFileError, tmp_path / "absent.af", "absent.af: cannot read")
    raises(NotAnAgentFile, tmp_path, "is a directory")


def test_a_bad_file_fails_before_anything_is_returned() -> None:
    good = agent()
    bad = agent(id="agent-1", block_ids=["block-404"])
    with pytest.raises(BrokenReference):
        read(document(good, bad))  # the good first agent is never handed out


# ---------------------------------------------------------------- writing

def test_export_carries_passages_and_what_letta_requires() -> None:
    blocks = (BlockSpec("persona", "I am Sam.", 500, "who I am"), BlockSpec("human", "Ann", 500, read_only=True))
    passages = (ArchivalPassage("Ann likes tea.", ("prefs",), T0),)
    spec = AgentSpec("my/agent: v2", "You are Sam.", blocks, tuple(builtin_tool(n) for n in VMEM_BUILTINS),
                     in_context=(ChatMessage("user", "hi", T0),), summary="We met.", passages=passages,
                     context_window=16000, agent_type="memgpt_agent")
    doc = write_agent_file(AgentFile((spec,)))
    check_letta_shape(doc)
    assert doc["agents"][0]["name"] == "my_agent_ v2"
    assert doc[EXTENSION_KEY]["agents"]["agent-0"]["passages"] == [
        {"text": "Ann likes tea.", "tags": ["prefs"], "created_at": T0.isoformat()}]
    assert [t["tool_type"] for t in doc["tools"]][:3] == ["letta_core", "letta_memory_core", "letta_memory_core"]
    back = read(doc)
    a = back.agents[0]
    assert a.name == "my/agent: v2" and a.passages == passages and a.summary == "We met."
    assert a.model is None and "llm_config" not in a.letta  # made up for Letta, not read back as data
    assert [t.builtin for t in a.tools] == list(VMEM_BUILTINS)
    assert a.block("human").read_only and a.block("persona").description == "who I am"


def test_an_empty_assistant_message_keeps_a_text_part() -> None:
    # Letta's Message.to_openai_dict asserts that an assistant message has text or a call
    spec = AgentSpec("a", "s", in_context=(ChatMessage("assistant", "", T0, reasoning="hm"),
                                           ChatMessage("assistant", "", T0, (ToolCall("c", "f"),)),
                                           ChatMessage("tool", "ok", T0, tool_call_id="c", name="f")),
                     context_window=1000, id="agent-0")
    doc = write_agent_file(AgentFile((spec,)))
    first, with_call = doc["agents"][0]["messages"][1:3]
    assert [p["type"] for p in first["content"]] == ["reasoning", "text"] and first["content"][1]["text"] == ""
    assert with_call["content"] == [] and with_call["tool_calls"]
    assert read(doc) == AgentFile((spec,))


def test_builtin_tools_round_trip_to_themselves() -> None:
    for name, params in VMEM_BUILTINS.items():
        tool = builtin_tool(name)
        assert tool.builtin == name
    with pytest.raises(ValueError, match="not a vmem built-in"):
        builtin_tool("launch_rockets")


def test_mcp_tool_named_like_a_builtin_is_never_mapped() -> None:
    tools = [{"id": "tool-0", "name": "conversation_search", "tool_type": "external_mcp",
              "json_schema": {"name": "conversation_search", "parameters": {"type": "object", "properties": {}}},
              "metadata_": {"mcp": {"server_name": "crm"}}}]
    af = read(document(agent(tool_ids=["tool-0"]), tools=tools))
    assert af.agents[0].tools[0].builtin is None
    assert "needs its MCP server" in af.report.format()


def test_custom_tool_named_like_a_builtin_is_never_mapped() -> None:
    tools = [{"id": "tool-0", "name": "send_message", "tool_type": "custom", "source_code": "def send_message(): ...",
              "json_schema": {"name": "send_message", "parameters": {"type": "object", "properties": {}}}}]
    af = read(document(agent(tool_ids=["tool-0"]), tools=tools))
    assert af.agents[0].tools[0].builtin is None
    assert "custom code under the name of a vmem built-in" in af.report.format()


def test_dump_is_atomic(tmp_path: Path, monkeypatch) -> None:
    spec = AgentFile((AgentSpec("a", "s", context_window=1000, id="agent-0"),))
    target = tmp_path / "out.af"

    def boom(*a: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(af_writing.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        dump_agent_file(spec, target)
    assert list(tmp_path.iterdir()) == []  # no file, no temporary left behind
    monkeypatch.undo()
    dump_agent_file(spec, target)
    assert read_agent_file(target) == spec


def test_naive_timestamps_are_refused_in_the_data() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        ChatMessage("user", "hi", dt.datetime(2025, 1, 1))


def test_report_reads_as_one_list() -> None:
    af = read(document(agent([msg("message-0", "system", "x"),
                              msg("message-1", "assistant", "", tool_calls=[call("c", "f")])])))
    text = af.report.format()
    assert text.splitlines()[0] == "Import report for <bytes>: 1 agent, 1 warning"
    assert "agent agent-0 (sam):" in text and "  warning  message message-1: tool call f (c)" in text
    assert str(af.report) == text


def test_vmem_builtins_match_the_kernel() -> None:
    from vmem.kernel.builtins import BUILTINS

    declared = {}
    for func in BUILTINS:
        fn = func.tool.get("function", func.tool)
        declared[fn["name"]] = tuple(p for p in fn["parameters"]["properties"] if p != "request_heartbeat")
    assert declared == dict(VMEM_BUILTINS)


def test_the_package_needs_only_the_standard_library() -> None:
    import ast

    names: set[str] = set()
    for module in (ROOT / "app" / "agentfile").glob("*.py"):
        tree = ast.parse(module.read_text())
        names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        names |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    outside = {n for n in names if not n.startswith("vmem.app.agentfile.")}
    assert {n.split(".")[0] for n in outside} <= set(sys.stdlib_module_names) | {"__future__"}, names


# ---------------------------------------------------------------- round trip, any file

# no NUL: Letta strips it from block values (PostgreSQL), and so does the reader
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=30)
TIMES = st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2100, 1, 1), timezones=st.just(UTC))
ENVELOPES = st.sampled_from([envelope("heartbeat", reason="Function called using request_heartbeat=true"),
                             envelope("login", last_login="Never"),
                             envelope("system_alert", message="Memory is under pressure."),
                             '{"type": "user_message", "message": "nested"}', '{"type": "other"}'])
NAMES = st.none() | st.sampled_from(["sam", "ann_b", "bob"])


@st.composite
def history(draw: Any, counter: list[int]) -> tuple[ChatMessage, ...]:
    """Messages as an import produces them: each call followed by its result."""
    out: list[ChatMessage] = []
    for _ in range(draw(st.integers(0, 5))):
        t = draw(TIMES)
        turn = draw(st.sampled_from(["user", "envelope", "text", "calls", "system"]))
        if turn == "user":
            out.append(ChatMessage("user", draw(TEXT), t, name=draw(NAMES)))
        elif turn == "envelope":
            out.append(ChatMessage("user", draw(ENVELOPES), t))
        elif turn == "system":
            out.append(ChatMessage("system", "[note] " + draw(TEXT), t))
        elif turn == "text":
            out.append(ChatMessage("assistant", draw(TEXT), t, reasoning=draw(st.just("") | TEXT), name=draw(NAMES)))
        else:
            calls = []
            for _ in range(draw(st.integers(1, 3))):
                counter[0] += 1
                calls.append(ToolCall(f"call_{counter[0]}", draw(st.sampled_from(["send_message", "f", "g"])),
                                      json.dumps({"message": draw(TEXT)})))
            out.append(ChatMessage("assistant", draw(TEXT), t, tuple(calls)))
            out += [ChatMessage("tool", draw(TEXT), t, tool_call_id=c.id, name=c.name) for c in calls]
    return tuple(out)


@st.composite
def agent_files(draw: Any) -> AgentFile:
    n = draw(st.integers(1, 3))
    agent_ids = [f"agent-{i}" for i in range(n)]
    pool = draw(st.integers(0, 4))
    members = {b: [a for a in agent_ids if draw(st.booleans())] for b in range(pool)}
    blocks = {b: BlockSpec(f"label{b}", draw(TEXT), draw(st.integers(30, 10_000)), draw(TEXT), draw(st.booleans()),
                           f"block-{b}", tuple(members[b]),
                           draw(st.just({}) | st.just({"metadata": {"k": "v"}}))) for b in range(pool)}
    tools = [replace_id(builtin_tool(name), f"tool-{i}") for i, name in enumerate(VMEM_BUILTINS)]
    tools.append(ToolSpec("lookup", "custom", "Look up.", {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}, "def lookup(q): ...",
        "python", "tool-99", {"tags": ["x"], "return_char_limit": 5000}))
    counter = [0]
    agents = []
    for aid in agent_ids:
        mine = draw(st.lists(st.sampled_from(tools), unique_by=lambda t: t.id, max_size=4))
        llm = draw(st.just({}) | st.just({"llm_config": {"model_endpoint_type": "openai", "temperature": 0.5}}))
        agents.append(AgentSpec(
            draw(st.text(min_size=1, max_size=12).filter(str.strip)), draw(st.just("") | TEXT.map("You are ".__add__)),
            tuple(blocks[b] for b in range(pool) if aid in members[b]), tuple(mine),
            tuple(ToolRule(r, t.name) for r, t in zip(draw(st.lists(st.sampled_from(["exit_loop", "continue_loop"]),
                                                                      max_size=len(mine))), mine)),
            draw(history(counter)), draw(history(counter)), draw(st.just("") | TEXT),
            tuple(ArchivalPassage(draw(TEXT), tuple(draw(st.lists(TEXT, max_size=2))), draw(TIMES))
                  for _ in range(draw(st.integers(0, 2)))),
            draw(st.integers(256, 2_000_000)), draw(st.none() | st.sampled_from(["gpt-4o-mini", "qwen2.5"])),
            draw(st.none() | st.sampled_from(["memgpt_agent", "letta_v1_agent"])), draw(TEXT), aid,
            {**llm, **draw(st.just({}) | st.just({"tags": ["t"], "timezone": "UTC"}))}))
    groups = ()
    if n > 1 and draw(st.booleans()):
        shared = tuple(f"block-{b}" for b in range(pool) if members[b])
        groups = (GroupSpec("group-0", tuple(agent_ids[1:]), "sleeptime", "agent-0", "", shared,
                            {"sleeptime_agent_frequency": 5}),)
    created = draw(st.none() | TIMES)
    return AgentFile(tuple(agents), groups, created, {"revision_id": draw(TEXT)})


def replace_id(tool: ToolSpec, new_id: str) -> ToolSpec:
    return ToolSpec(tool.name, tool.tool_type, tool.description, tool.json_schema, tool.source_code,
                    tool.source_type, new_id, tool.letta)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(agent_files())
def test_round_trip_any_file(spec: AgentFile) -> None:
    doc = write_agent_file(spec)
    check_letta_shape(doc)
    back = read(doc)
    assert back == spec
    assert not back.report.warnings, back.report.format()
    assert write_agent_file(back) == doc  # and the export is stable
