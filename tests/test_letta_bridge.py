"""Letta agent files into vmem agents and back (vmem import / vmem export).

Unit tests build their own small files; the eight published files ship in ``tests/data/letta``
(Apache-2.0, their LICENSE beside them; ``$VMEM_LETTA_FILES`` names another folder), so a
fresh clone tests them: a missing one is a failure, not a skip.
"""

from __future__ import annotations

import datetime as dt
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vmem.app.agentfile import AgentFileTooLarge, BrokenReference, NotAnAgentFile, read_agent_file
from vmem.app.letta_bridge import LettaBridgeError, export_agent_file, import_agent_file, kept_data
from vmem import PageKind, make_page_id
from vmem.kernel import Memory, MemoryConfig

ROOT = Path(__file__).resolve().parents[1]
UTC = dt.timezone.utc
T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
LETTA_FILES = Path(os.environ.get("VMEM_LETTA_FILES") or ROOT / "tests" / "data" / "letta")  # shipped: Apache-2.0
EIGHT = ["memgpt_agent.af", "memgpt_agent_with_convo.af", "customer_service.af", "deep_research_agent.af",
         "outreach_workflow_agent.af", "evie.af", "loop.af", "lettabot.af"]


# ---------------------------------------------------------------- small files built here


def msg(mid: str, role: str, text: str = "", t: int = 0, **kw: Any) -> dict[str, Any]:
    """A Letta message ``t`` minutes after T0."""
    return {"id": mid, "role": role, "content": [{"type": "text", "text": text}],
            "created_at": (T0 + dt.timedelta(minutes=t)).isoformat(), **kw}


def call(cid: str, name: str, **args: Any) -> dict[str, Any]:
    return {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}


def result(mid: str, cid: str, t: int, text: str = '{"status": "OK", "message": "None"}') -> dict[str, Any]:
    return msg(mid, "tool", text, t, tool_call_id=cid,
               tool_returns=[{"tool_call_id": cid, "status": "success", "func_response": text}])


def summary_message(mid: str, body: str, t: int) -> dict[str, Any]:
    text = json.dumps({"type": "system_alert", "message": "Note: prior messages (3 of 9 total messages) have been "
                       "hidden from view due to conversation memory constraints.\nThe following is a summary of the "
                       f"previous 3 messages:\n {body}", "time": "2025-03-01 12:00:00 PM UTC+0000"})
    return msg(mid, "user", text, t)


def block(bid: str, label: str, value: str, limit: int = 2000, **kw: Any) -> dict[str, Any]:
    return {"id": bid, "label": label, "value": value, "limit": limit, "description": f"the {label} block", **kw}


SAM_MESSAGES = [
    msg("message-0", "system", "You are Sam.\n<memory_blocks>...</memory_blocks>", 0),
    msg("message-1", "user", "I have a cat called Pixel.", 1),                            # history
    msg("message-2", "assistant", "Saving that.", 2,
        tool_calls=[call("c1", "core_memory_append", label="human", content="cat: Pixel")]),
    result("message-3", "c1", 3),
    summary_message("message-4", "Ana has a cat called Pixel.", 4),
    msg("message-5", "user", "What is my cat called?", 5),                                # the queue
    msg("message-6", "assistant", "Checking my notes.", 6,
        tool_calls=[call("c2", "send_message", message="Pixel!")]),
    result("message-7", "c2", 7),
    msg("message-8", "user", "Email Bob about it.", 8),
    msg("message-9", "assistant", "", 9, tool_calls=[call("c3", "send_email", to="bob")]),  # no result in the file
]
CUSTOM_TOOL = {"id": "tool-1", "name": "send_email", "tool_type": "custom", "source_type": "python",
               "source_code": "def send_email(to: str):\n    raise SystemExit('never run')\n",
               "json_schema": {"name": "send_email", "description": "Send an email.",
                               "parameters": {"type": "object", "properties": {"to": {"type": "string"}},
                                              "required": ["to"]}}}
APPEND_TOOL = {"id": "tool-0", "name": "core_memory_append", "tool_type": "letta_memory_core",
               "json_schema": {"name": "core_memory_append", "description": "Append.",
                               "parameters": {"type": "object", "properties": {"label": {"type": "string"},
                                                                               "content": {"type": "string"}}}}}


def sam(**kw: Any) -> dict[str, Any]:
    doc = {"id": "agent-0", "name": "sam", "system": "You are Sam.", "agent_type": "memgpt_agent",
           "llm_config": {"model": "gpt-4o-mini", "model_endpoint_type": "openai", "context_window": 16000},
           "block_ids": ["block-0", "block-1", "block-2"], "tool_ids": ["tool-0", "tool-1"],
           "tool_rules": [{"tool_name": "core_memory_append", "type": "continue_loop"}], "messages": SAM_MESSAGES,
           "in_context_message_ids": ["message-0", "message-4", "message-5", "message-6", "message-7", "message-8",
                                      "message-9"]}
    doc.update(kw)
    return doc


def document(*agents: dict[str, Any], blocks: list | None = None, **kw: Any) -> dict[str, Any]:
    doc = {"agents": list(agents) or [sam()], "groups": [], "files": [], "sources": [], "mcp_servers": [],
           "blocks": blocks if blocks is not None else [
               block("block-0", "human", "Ana."), block("block-1", "persona", "I am Sam.", read_only=True),
               block("block-2", "notes", "x" * 30, limit=20)],   # over its limit, as published files can be
           "tools": [APPEND_TOOL, CUSTOM_TOOL], "metadata": {}, "created_at": T0.isoformat()}
    doc.update(kw)
    return doc


def write(tmp_path: Path, doc: Any, name: str = "sam.af") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


def snapshot(path: Path) -> dict[str, Any]:
    """What an agent is, as a round trip must keep it."""
    with Memory.open(path, read_only=True) as m:
        kept = kept_data(m) or {}
        recall = m.store.recall.get_many(make_page_id(PageKind.MESSAGE, i) for i in range(1, len(m.store.recall) + 1))
        return {
            "system": m.system,
            "blocks": [(b.label, b.value, b.limit, b.description, b.read_only) for b in m.store.blocks.all()],
            "queue": list(zip(m.queue.messages, [x.timestamp for x in m.store.recall.get_many(m.queue.pages())])),
            "summary": m.summary, "evicted": m.evicted, "config": m.config, "instructions": m.instructions,
            "budget": m.ctx.config.budget,
            "recall": [(x.role, x.content, x.timestamp, x.meta) for x in recall],
            "archival": sorted(p.text for p in m.archival_search("", page=0).items),
            "tools": kept.get("tools"), "tool_rules": kept.get("tool_rules"),
        }


# ---------------------------------------------------------------- import


def test_import_maps_what_vmem_has_and_keeps_the_rest_as_data(tmp_path):
    target = tmp_path / "sam"
    res = import_agent_file(write(tmp_path, document()), target)
    assert res.directories == {"agent-0": target}
    with Memory.open(target, read_only=True) as m:
        m.check()
        assert m.system == "You are Sam." and m.config.window == 16000
        blocks = {b.label: b for b in m.store.blocks.all()}
        assert (blocks["human"].value, blocks["human"].description) == ("Ana.", "the human block")
        assert blocks["persona"].read_only and blocks["notes"].limit == 130  # raised to hold the value, and more
        # the queue: the context after the summary, calls followed by their results, the file's times
        q = m.queue.messages
        assert [x["role"] for x in q] == ["user", "assistant", "tool", "user", "assistant", "tool"]
        assert q[1]["tool_calls"][0]["function"]["name"] == "send_message" and q[2]["tool_call_id"] == "c2"
        assert json.loads(q[5]["content"])["status"] == "Failed"             # the call the file left unanswered
        times = [x.timestamp for x in m.store.recall.get_many(m.queue.pages())]
        assert times[:4] == [T0 + dt.timedelta(minutes=k) for k in (5, 6, 7, 8)]
        # the history: in recall storage only, behind the summary
        assert m.summary == "Ana has a cat called Pixel." and m.evicted == 3
        found = m.conversation_search("Pixel")
        assert found.total == 1 and found.items[0].timestamp == T0 + dt.timedelta(minutes=1)
        assert "Ana has a cat called Pixel." in m.compile()[2]["content"]
        # the custom tool: kept as data, never offered to the model
        kept = kept_data(m)
        assert "send_email" not in m.functions
        assert kept["tools"][1]["source_code"].startswith("def send_email")
        assert kept["tool_rules"] == [{"type": "continue_loop", "tool_name": "core_memory_append", "params": {}}]
        assert kept["agent"]["model"] == "gpt-4o-mini" and kept["agent"]["settings"]["llm_config"]
    text = res.report.format()
    for line in ("mapped   block human", "mapped   summary", "mapped   messages: 6 in context",
                 "mapped   history: 3 out-of-context", "mapped   tool core_memory_append",
                 "kept     tool send_email", "kept     tool rules", "warning  block notes: limit raised from 20 to 130",
                 "warning  message message-9", "never run"):
        assert line in text, line


def test_an_imported_block_over_its_limit_stays_editable(tmp_path):
    """Issue 19, item 6: ezra.af's block over its limit was raised to exactly its length, so the
    agent's next core_memory_append was refused."""
    big = "fact. " * 4000  # 24,000 characters, over the file's limit of 20,000
    doc = document(blocks=[block("block-0", "human", big, limit=20_000), block("block-1", "persona", "I am Sam."),
                           block("block-2", "notes", "x" * 30, limit=20)])
    res = import_agent_file(write(tmp_path, doc), tmp_path / "sam", window=32_000)
    with Memory.open(tmp_path / "sam") as m:
        human = m.block("human")
        assert human.limit == 24_000 + 2_400 and m.block("notes").limit == 30 + 100
        for label in ("human", "notes"):
            c = call(f"c-{label}", "core_memory_append", label=label, content="one more fact")
            m.append({"role": "user", "content": f"remember this in {label}"})
            m.append({"role": "assistant", "content": None, "tool_calls": [c]})
            record = m.execute(c)
            assert record.ok, record.result
        m.check()
    assert ("limit raised from 20000 to 26400 characters: its value holds 24000 and vmem refuses a block over its "
            "limit, so the block keeps room for 2400 more to stay editable") in res.report.format()


def test_round_trip_export_then_import_gives_the_same_agent(tmp_path):
    first = tmp_path / "first"
    import_agent_file(write(tmp_path, document()), first)
    with Memory.open(first) as m:  # vmem's own additions travel too
        m.archival_insert("Pixel is a grey tabby.", tags=["cat"])
        m.set_block("human", "Ana. Has a cat.")
    out = tmp_path / "sam-again.af"
    exported = export_agent_file(first, out)
    assert exported.notes == []
    doc = json.loads(out.read_text())
    assert doc["x_vmem"]["agents"]["agent-0"]["passages"][0]["text"] == "Pixel is a grey tabby."
    second = tmp_path / "second"
    res = import_agent_file(out, second)
    assert not [w for w in res.report.warnings if "limit raised" not in w.detail]
    a, b = snapshot(first), snapshot(second)
    assert a == b
    assert a["archival"] == ["Pixel is a grey tabby."] and a["blocks"][0][1] == "Ana. Has a cat."
    # and once more: the file is stable
    assert json.loads(json.dumps(export_agent_file(second).file.agents[0].blocks[0].value)) == "Ana. Has a cat."


def test_export_then_import_keeps_the_memory_configuration(tmp_path):
    """Issue 19, item 7: the demo's agent came back with output reserve 1,024 instead of 512,
    prefetch 0 instead of 2, a smaller budget, and opened 100% over it."""
    from vmem.app.demo import BLOCKS, DEMO_CONFIG, SYSTEM_PROMPT

    with Memory.create(tmp_path / "demo", system=SYSTEM_PROMPT, blocks=BLOCKS, config=DEMO_CONFIG,
                       instructions="Save facts.") as m:
        m.append({"role": "user", "content": "I'm Maya. " + "I like long walks. " * 100})
    export_agent_file(tmp_path / "demo", tmp_path / "demo.af")
    res = import_agent_file(tmp_path / "demo.af", tmp_path / "again")
    a, b = snapshot(tmp_path / "demo"), snapshot(tmp_path / "again")
    assert b["config"] == DEMO_CONFIG and b["instructions"] == "Save facts."
    mine = ("tools", "tool_rules")  # what Letta keeps beside the agent: none for a vmem agent, its tools after
    assert {k: v for k, v in a.items() if k not in mine} == {k: v for k, v in b.items() if k not in mine}
    with Memory.open(tmp_path / "again", read_only=True) as m:
        assert m.ctx.status().state.name == "OK" and m.config.prefetch == 2 and m.config.reserve_output == 512
    assert "mapped   memory configuration" in res.report.format()
    # a window asked for at import replaces the saved one, and the rest stays
    import_agent_file(tmp_path / "demo.af", tmp_path / "wider", window=8192)
    with Memory.open(tmp_path / "wider", read_only=True) as m:
        assert m.config == dataclasses.replace(DEMO_CONFIG, window=8192)


def test_a_vmem_agent_exports_as_a_letta_agent_with_vmem_tools(tmp_path):
    src = tmp_path / "native"
    with Memory.create(src, system="You are Kit.", blocks={"human": "Bo."}, config=MemoryConfig(window=8192)) as m:
        m.append({"role": "user", "content": "hello"}, timestamp=T0)
        m.append({"role": "assistant", "content": "hi"}, timestamp=T0 + dt.timedelta(seconds=5))
    af = export_agent_file(src, tmp_path / "kit.af").file
    a = af.agents[0]
    assert (a.name, a.agent_type, a.context_window) == ("native", "memgpt_agent", 8192)
    back = read_agent_file(tmp_path / "kit.af").agents[0]
    assert {t.builtin for t in back.tools} == set(Memory.open(src, read_only=True).functions)
    assert [(x.role, x.content) for x in back.in_context] == [("user", "hello"), ("assistant", "hi")]


def two_agents(shared_value: str = "shared fact") -> dict[str, Any]:
    main = sam(id="agent-0", name="main", messages=[msg("message-0", "system", "x")], tool_ids=["tool-0"],
               in_context_message_ids=["message-0"], block_ids=["block-0", "block-9"], tool_rules=[])
    helper = sam(id="agent-1", name="helper/sleeptime", messages=[msg("message-1", "system", "y")], tool_ids=[],
                 in_context_message_ids=["message-1"], block_ids=["block-9"], tool_rules=[])
    return document(main, helper, blocks=[block("block-0", "human", "Ana."), block("block-9", "facts", shared_value)],
                    groups=[{"id": "group-0", "agent_ids": ["agent-1"], "description": "",
                             "manager_config": {"manager_type": "sleeptime", "manager_agent_id": "agent-0"},
                             "shared_block_ids": []}])


def test_several_agents_get_a_directory_each_and_shared_blocks_come_back_as_one(tmp_path):
    target = tmp_path / "team"
    res = import_agent_file(write(tmp_path, two_agents()), target)
    assert res.directories == {"agent-0": target / "main", "agent-1": target / "helper_sleeptime"}
    assert "facts: one shared block each, stored once in shared-blocks.db" in res.report.format()
    for d in res.directories.values():
        with Memory.open(d, read_only=True) as m:
            assert m.block("facts").value == "shared fact"
            assert m.store.blocks.get("facts").value == ""  # not copied into the agent's store
    exported = export_agent_file(target, tmp_path / "team.af")
    doc = json.loads((tmp_path / "team.af").read_text())
    assert len(doc["agents"]) == 2 and [b["label"] for b in doc["blocks"]] == ["human", "facts"]
    assert doc["groups"][0]["manager_config"]["manager_agent_id"] == "agent-0" and exported.notes == []
    # an edit by one agent is the other's too (Letta's sleep-time agent writes the primary's block so)
    with Memory.open(target / "helper_sleeptime") as m:
        m.set_block("facts", "changed by the helper")
    with Memory.open(target / "main", read_only=True) as m:
        assert m.block("facts").value == "changed by the helper"
    exported = export_agent_file(target, tmp_path / "team2.af")
    doc = json.loads((tmp_path / "team2.af").read_text())
    assert [b["value"] for b in doc["blocks"] if b["label"] == "facts"] == ["changed by the helper"]
    # the directory moves as a whole: the agents find their shared store again
    moved = tmp_path / "moved"
    os.replace(target, moved)
    with Memory.open(moved / "main") as m:
        assert m.block("facts").value == "changed by the helper"
        m.check(deep=True)
    target = moved
    # one agent of a directory of agents: its group cannot come along, and the export says so
    alone = export_agent_file(target / "helper_sleeptime", tmp_path / "helper.af")
    assert "group group-0 (sleeptime): left out" in alone.notes[0]


def test_one_agent_of_a_file(tmp_path):
    res = import_agent_file(write(tmp_path, two_agents()), tmp_path / "h", agent="helper/sleeptime")
    assert res.directories == {"agent-1": tmp_path / "h"} and Memory.exists(tmp_path / "h")
    with pytest.raises(LettaBridgeError, match="no agent 'nobody' in the file; it holds agent-0 \\(main\\)"):
        import_agent_file(write(tmp_path, two_agents()), tmp_path / "n", agent="nobody")


# ---------------------------------------------------------------- bad input: clear errors, nothing half-created


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if not p.name.endswith(".af"))


@pytest.mark.parametrize("content, error, fragment", [
    ("not json at all", NotAnAgentFile, "not JSON"),
    (json.dumps({"agents": [{"name": "x"}]}), BrokenReference, "id"),
    (json.dumps(json.dumps(json.dumps(document()))), NotAnAgentFile, "more than twice"),
])
def test_bad_files_are_refused_with_one_line_and_nothing_is_made(tmp_path, content, error, fragment):
    with pytest.raises(error) as info:
        import_agent_file(write(tmp_path, content), tmp_path / "out")
    assert fragment in str(info.value) and "\n" not in str(info.value)
    assert leftovers(tmp_path) == []


def test_a_hundred_megabyte_file_is_refused_before_it_is_read(tmp_path):
    big = tmp_path / "big.af"
    with open(big, "wb") as f:
        f.truncate(100 * 2**20)  # sparse: no 100 MB written
    with pytest.raises(AgentFileTooLarge, match="over the limit"):
        import_agent_file(big, tmp_path / "out")
    assert leftovers(tmp_path) == []


def test_quirks_are_warnings_or_notes_in_the_report(tmp_path):
    doc = document()
    doc["agents"][0]["favourite_colour"] = "blue"  # an unknown field: the format evolves
    res = import_agent_file(write(tmp_path, json.dumps(json.dumps(doc))), tmp_path / "out")  # double-encoded
    text = res.report.format()
    assert "note     double-encoded JSON" in text and "warning  unknown fields in agents: favourite_colour" in text
    assert "send_email (c3) has no result" in text


def test_a_failure_midway_leaves_nothing_behind(tmp_path):
    doc = two_agents()
    doc["agents"][1]["llm_config"]["context_window"] = 1000  # the second agent cannot fit vmem's tool schemas
    with pytest.raises(LettaBridgeError, match="helper/sleeptime.*pass a larger window"):
        import_agent_file(write(tmp_path, doc), tmp_path / "team")
    assert leftovers(tmp_path) == []


def test_the_target_must_be_new_or_empty(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(LettaBridgeError, match="not an empty directory"):
        import_agent_file(write(tmp_path, document()), tmp_path / "busy")
    (tmp_path / "empty").mkdir()
    assert import_agent_file(write(tmp_path, document()), tmp_path / "empty").directories["agent-0"].is_dir()


# ---------------------------------------------------------------- the command line


def vmem(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vmem.app.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_the_commands_import_and_export_with_one_line_errors(tmp_path):
    write(tmp_path, document())
    p = vmem("import", "sam.af", "sam", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "Import report for sam.af" in p.stdout and "imported sam (agent-0) into sam" in p.stdout
    p = vmem("export", "sam", "back.af", cwd=tmp_path)
    assert p.returncode == 0 and "wrote back.af" in p.stdout, p.stderr
    for args, code, fragment in [(("import", "sam.af", "sam"), 2, "not an empty directory"),
                                 (("import", "missing.af", "x"), 2, "missing.af does not exist"),
                                 (("export", "sam", "back.af"), 2, "pass --force"),
                                 (("export", "nowhere", "x.af"), 2, "nowhere does not exist"),
                                 (("import", "sam", "y"), 1, "is a directory")]:
        p = vmem(*args, cwd=tmp_path)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == code and len(lines) == 1 and fragment in lines[0], (args, p.stderr)
        assert "Traceback" not in p.stderr
    (tmp_path / "bad.af").write_text("{")
    p = vmem("import", "bad.af", "bad", cwd=tmp_path)
    assert p.returncode == 1 and p.stderr.startswith("vmem: error: cannot import bad.af: not JSON")
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------- the eight published files


def real(name: str) -> Path:
    path = LETTA_FILES / name
    if not path.is_file():
        pytest.fail(f"Letta agent file {name} not found in {LETTA_FILES}: the repository ships it in tests/data/letta "
                    "(VMEM_LETTA_FILES names another folder)")
    return path


@pytest.mark.parametrize("name", EIGHT)
def test_published_file_imports_and_round_trips(name, tmp_path):
    first = tmp_path / "first"
    res = import_agent_file(real(name), first)
    af = res.file
    for spec in af.agents:
        with Memory.open(res.directories[spec.id], read_only=True) as m:
            m.check()
            assert [b.label for b in m.store.blocks.all()] == [b.label for b in spec.blocks]
            assert len(m.queue) == len(spec.in_context) + (1 if spec.summary and not spec.out_of_context else 0)
            kept = kept_data(m)
            assert [t["name"] for t in kept["tools"]] == [t.name for t in spec.tools]
            code = [t for t in kept["tools"] if t["source_code"]]
            assert all(t["name"] not in m.functions for t in code if t["tool_type"] == "custom")
    assert not [e for e in res.report.entries if e.category == "skipped" and "tool" in e.subject
                and "no agent of the file uses it" not in e.detail]
    export_agent_file(first, tmp_path / "again.af")
    second = tmp_path / "second"
    again = import_agent_file(tmp_path / "again.af", second)
    for spec in af.agents:
        assert snapshot(res.directories[spec.id]) == snapshot(again.directories[spec.id])


@pytest.mark.parametrize("command", ["import", "export"])
def test_help(command, tmp_path):
    p = vmem(command, "--help", cwd=tmp_path)
    assert p.returncode == 0 and p.stdout.startswith(f"usage: vmem {command}") and "Letta" in p.stdout


@pytest.mark.parametrize("summary_role", ["user", "summary"])
def test_export_gives_back_letta_messages_as_the_file_wrote_them(tmp_path, summary_role):
    """Issue 19, item 8 (Letta's own file, first export): the summary message's role, text and
    created_at, the system message's created_at, a content of three parts and the tool
    messages' name came back changed."""
    messages = [dict(m) for m in SAM_MESSAGES]
    messages[0]["created_at"] = "2025-02-28T08:00:00.123456+00:00"  # compiled long before the queue's first message
    messages[4] = {**summary_message("message-4", "Ana has a cat called Pixel.", 4), "role": summary_role,
                   "created_at": "2025-03-01T12:04:30.5+00:00"}
    messages[5] = {**messages[5], "content": [{"type": "text", "text": "What is"}, {"type": "text", "text": "my cat"},
                                              {"type": "text", "text": "called?"}]}
    messages[7] = {**messages[7], "name": "send_message"}
    doc = document(sam(messages=messages))
    import_agent_file(write(tmp_path, doc), tmp_path / "sam")
    exported = export_agent_file(tmp_path / "sam", tmp_path / "again.af")
    assert exported.notes == []
    out = json.loads((tmp_path / "again.af").read_text())["agents"][0]
    by_id = {m["id"]: m for m in out["messages"]}
    context = [by_id[i] for i in out["in_context_message_ids"]]
    system, summary, question = context[0], context[1], context[2]
    assert system["role"] == "system" and system["created_at"] == messages[0]["created_at"]
    assert (summary["role"], summary["content"], summary["created_at"]) == (
        summary_role, messages[4]["content"], messages[4]["created_at"])
    assert question["content"] == [{"type": "text", "text": t} for t in ("What is", "my cat", "called?")]
    tool = next(m for m in context if m.get("tool_call_id") == "c2")
    assert tool["name"] == "send_message"
