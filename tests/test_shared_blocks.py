"""Shared blocks (issue 17 item 5): one block several agents attach, stored once; edits are
compare-and-set on the block's version, re-applied to the fresh value (append, replace, insert)
or refused when they cannot be (a conditional rewrite), never lost, never applied twice; an
agent sees another's edit at its next step, and its trace says who made it."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import uuid

import pytest

from kernel_helpers import call, check_agent
from vmem import InvariantError
from vmem.app.history import HistoryBuilder, describe, render_history_svg
from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver
from vmem.kernel.trace import read_trace
from vmem.storage import BlockExistsError, EditConflictError, ForeignFileError, NotFoundError
from vmem.storage.block_edit import BlockEdit
from vmem.storage.location import open_shared_blocks
from vmem.storage.shared_blocks import SharedBlockFile

CONFIG = MemoryConfig(window=4608)


@pytest.fixture
def shared_at(store_kind, tmp_path, request):
    """Where the test's shared block store lives: a file beside directory agents, or the
    database of PostgreSQL agents (block names made unique: the session's database is shared)."""
    if store_kind == "dir":
        return tmp_path / "shared.db", ""
    from vmem.storage.postgres_shared import database_url

    server = request.getfixturevalue("pg_server")
    return database_url(server.agent_url("x")), f"-{uuid.uuid4().hex[:8]}"


# ---------------------------------------------------------------- the edits' meaning


def test_each_edit_kind_says_what_it_does_to_a_value_another_writer_changed():
    assert BlockEdit.append("c").apply("a\nb") == "a\nb\nc"
    assert BlockEdit.append("c").apply("") == "c"
    assert BlockEdit.replace("b", "B").apply("a\nb\nx") == "a\nB\nx"
    with pytest.raises(EditConflictError, match="does not occur"):
        BlockEdit.replace("gone", "x").apply("a\nb")
    with pytest.raises(EditConflictError, match="2 times"):
        BlockEdit.replace("a", "x").apply("a a")
    assert BlockEdit.insert("top", 0).apply("a\nb") == "top\na\nb"
    with pytest.raises(EditConflictError, match="line"):
        BlockEdit.insert("x", 5).apply("a")
    assert BlockEdit.rewrite("new", base="old").apply("old") == "new"
    with pytest.raises(EditConflictError, match="changed since it was read"):
        BlockEdit.rewrite("new", base="old").apply("old, and what another agent added")
    assert BlockEdit.rewrite("new").apply("anything") == "new"  # the developer's unconditional set
    assert BlockEdit.append("a\ud800b").text == "a\ufffdb"  # storable, as a message's text is
    with pytest.raises(TypeError):
        BlockEdit.append(None)  # type: ignore[arg-type]
    for edit in (BlockEdit.append("x"), BlockEdit.replace("a", "b"), BlockEdit.insert("y", 2),
                 BlockEdit.rewrite("z", base="w")):
        assert BlockEdit.from_dict(edit.to_dict()) == edit


# ---------------------------------------------------------------- the store


def test_store_applies_each_edit_once_and_logs_who(tmp_path):
    store = open_shared_blocks(tmp_path / "shared.db")
    store.create("project", "vmem", limit=100, agent="ana")
    with pytest.raises(BlockExistsError):
        store.create("project")
    first = store.apply("e1", "project", BlockEdit.append("ships Friday"), agent="bob")
    again = store.apply("e1", "project", BlockEdit.append("ships Friday"), agent="bob")
    assert first.applied and again.applied and again.block.version == first.block.version == 2
    assert store.get("project").value == "vmem\nships Friday"
    refused = store.apply("e2", "project", BlockEdit.rewrite("x", base="vmem"), agent="cy")
    assert not refused.applied and "changed since" in refused.reason and refused.block.version == 2
    too_long = store.apply("e3", "project", BlockEdit.append("y" * 200), agent="cy")
    assert not too_long.applied and "limit" in too_long.reason
    assert [(r.edit_id, r.agent, r.applied) for r in store.history("project")] == [
        ("e3", "cy", False), ("e2", "cy", False), ("e1", "bob", True)]
    assert store.versions(["project", "nope"]) == {"project": 2}
    assert set(store.outcomes(["e1", "e9"])) == {"e1"}
    assert store.check() == []
    with pytest.raises(NotFoundError):
        store.get("nope")
    store.close()


def test_store_checksums_find_a_changed_value(tmp_path):
    path = tmp_path / "shared.db"
    SharedBlockFile(path).create("team", "alpha", limit=50)
    m = Memory.create(tmp_path / "ana", system="s", config=CONFIG)
    m.attach_block("team", path)
    m.check(deep=True)
    with sqlite3.connect(path) as c:  # damage that SQLite cannot see
        c.execute("UPDATE shared_blocks SET value='alphA'")
    assert SharedBlockFile(path).check() == ["shared block 'team' (version 1): its checksum does not match"]
    with pytest.raises(InvariantError, match="shared block 'team'.*checksum"):
        m.check(deep=True)
    m.close()


def test_store_refuses_foreign_files(tmp_path):
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t(x)")
    with pytest.raises(ForeignFileError):
        SharedBlockFile(other)
    with pytest.raises(ForeignFileError):
        SharedBlockFile(tmp_path)
    with pytest.raises(NotFoundError):
        open_shared_blocks(tmp_path / "missing.db", create=False)


# ---------------------------------------------------------------- agents


def _pair(place, shared_at, script_a=(), script_b=()):
    shared, suffix = shared_at
    open_shared_blocks(shared).create("team" + suffix, "Team notes.", limit=2000, agent="setup")
    a = Agent.create(place("ana"), system="You are Ana's agent.", blocks={"human": ""},
                     driver=ScriptedDriver(list(script_a)), config=CONFIG)
    b = Agent.create(place("bob"), system="You are Bob's agent.", blocks={"human": ""},
                     driver=ScriptedDriver(list(script_b)), config=CONFIG)
    a.memory.attach_block("team", shared, "team" + suffix)
    b.memory.attach_block("team", shared, "team" + suffix)
    return shared, a, b


def _value(shared_at):
    shared, suffix = shared_at
    return open_shared_blocks(shared).get("team" + suffix)


def test_an_edit_by_one_agent_reaches_the_other_at_its_next_step(place, shared_at):
    shared, a, b = _pair(place, shared_at, [
        Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="team", content="Release on Friday.")]),
        Completion(tool_calls=[call("send_message", message="noted")]),
    ], [Completion(tool_calls=[call("send_message", message="ok")])])
    a.step("Tell the team: release on Friday.")
    assert _value(shared_at).value == "Team notes.\nRelease on Friday."
    assert "Release on Friday." not in str(b.memory.compile())  # not yet: B reads it when its next step starts
    b.step("What is new?")
    assert "Release on Friday." in str(b.memory.compile())
    events = [e for e in read_trace(b.memory.store) if e.get("e") == "block"]
    assert events[-1]["by"] == _agent(a) and events[-1]["label"] == "team"
    builder = HistoryBuilder()  # the inspector's history picture: the step whose prompt changed at the core
    for event in read_trace(b.memory.store):
        builder.add(event)
    history = builder.history()
    assert "shared" in history.steps[-1].marks and "shared blocks changed by other agents" in describe(history)
    assert "mark-shared" in render_history_svg(history)
    for agent in (a, b):
        check_agent(agent)
        agent.memory.close()


def test_the_block_is_stored_once_not_per_agent(place, shared_at):
    shared, a, b = _pair(place, shared_at)
    a.memory.edit_block("team", BlockEdit.append("x" * 1500))
    for agent in (a, b):
        row = agent.memory.store.blocks.get("team")
        assert row.value == "" and row.limit == 2000  # a placeholder: the text is in the shared store
    assert b.memory.block("team").value == "Team notes."  # what Bob's context shows until his next transaction
    with b.memory.transaction():
        pass
    assert b.memory.block("team").value.endswith("x" * 1500)
    for agent in (a, b):
        agent.memory.close()


def test_concurrent_rewrites_one_wins_the_other_is_refused_and_traced(place, shared_at):
    shared, a, b = _pair(place, shared_at)
    with b.memory.transaction():  # Bob's step has read the block ("Team notes.") ...
        a.memory.set_block("team", "Ana's version.")  # ... when Ana rewrites it ...
        b.memory.set_block("team", "Bob's version.")  # ... and Bob rewrites what his context shows
    assert _value(shared_at).value == "Ana's version."  # Bob's rewrite was refused, not applied
    with b.memory.transaction():
        pass  # Bob's next transaction learns it
    refused = [e for e in read_trace(b.memory.store) if e.get("e") == "shared_refused"]
    assert refused and "changed since it was read" in refused[-1]["reason"]
    assert b.memory.block("team").value == "Ana's version."
    b.driver.push(Completion(tool_calls=[call("send_message", message="ok")]))
    b.step("anything new?")  # and the model is told, in its next step's context
    notice = [m for m in b.memory.compile() if "was not applied" in str(m.get("content"))]
    assert notice and "shared block 'team'" in notice[0]["content"] and notice[0]["role"] == "system"
    with pytest.raises(EditConflictError):  # a rewrite of a value this memory does not show is refused at once
        b.memory.edit_block("team", BlockEdit.rewrite("Bob's version.", base="stale text"))
    check_agent(b.memory)
    for agent in (a, b):
        agent.memory.close()


def test_a_step_that_rolls_back_does_not_edit_the_shared_block(place, shared_at):
    shared, a, _ = _pair(place, shared_at)
    with pytest.raises(RuntimeError):
        with a.memory.transaction():
            a.memory.edit_block("team", BlockEdit.append("half a step"))
            raise RuntimeError("the step fails after the edit")
    assert _value(shared_at).value == "Team notes."
    assert a.memory.block("team").value == "Team notes."
    check_agent(a.memory)
    a.memory.close()


def test_an_edit_committed_but_not_applied_is_applied_once_at_reopen(place, shared_at, monkeypatch):
    from vmem.kernel.shared_blocks import SharedBlocks

    shared, a, b = _pair(place, shared_at)
    b.memory.close()
    monkeypatch.setattr(SharedBlocks, "flush", lambda self: (_ for _ in ()).throw(OSError("the process died")))
    a.memory.edit_block("team", BlockEdit.append("after the crash"))
    assert _value(shared_at).value == "Team notes."  # committed in Ana's store only
    a.memory.close()
    monkeypatch.undo()
    for _ in range(2):
        with Memory.open(place("ana")) as again:
            assert again.block("team").value == "Team notes.\nafter the crash"
            again.check()
    assert _value(shared_at).value == "Team notes.\nafter the crash" and _value(shared_at).version == 2


def test_share_an_own_block_and_detach_it(tmp_path):
    a = Memory.create(tmp_path / "ana", system="s", blocks={"project": "vmem ships Friday."}, config=CONFIG)
    a.share_block("project", tmp_path / "shared.db")
    b = Memory.create(tmp_path / "bob", system="s", config=CONFIG)
    b.attach_block("project", tmp_path / "shared.db")
    assert b.block("project").value == "vmem ships Friday."
    b.delete_block("project")  # detaches; the shared block stays for Ana
    assert "project" not in b.block_labels()
    assert open_shared_blocks(tmp_path / "shared.db").get("project").value == "vmem ships Friday."
    with pytest.raises(ValueError, match="shared"):
        a.update_block("project", limit=10)
    for m in (a, b):
        m.check()
        m.close()


def _appender(location: str, name: str, n: int) -> None:
    memory = Memory.open(location)
    for i in range(n):
        memory.edit_block("team", BlockEdit.append(f"{name}-{i}"))
    memory.close()


def test_four_processes_appending_lose_no_update(place, shared_at):
    shared, suffix = shared_at
    open_shared_blocks(shared).create("team" + suffix, "", limit=100_000)
    names = [f"w{i}" for i in range(4)]
    for name in names:
        with Memory.create(place(name), system="s", config=MemoryConfig(window=8192)) as m:
            m.attach_block("team", shared, "team" + suffix)
    n = 25
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_appender, args=(str(place(name)), name, n)) for name in names]
    for p in procs:
        p.start()
    for p in procs:
        p.join(180)
        assert p.exitcode == 0
    block = _value(shared_at)
    assert sorted(block.value.split("\n")) == sorted(f"{name}-{i}" for name in names for i in range(n))  # once each
    assert block.version == 1 + 4 * n
    for name in names:
        with Memory.open(place(name)) as m:
            with m.transaction():
                pass
            assert m.block("team").value.count("\n") == 4 * n - 1
            m.check(deep=True)


def _agent(agent):
    return agent.memory.shared_blocks.agent


def test_a_block_another_agent_grew_past_this_window_is_shown_cut_and_the_next_step_runs(tmp_path):
    shared = tmp_path / "shared.db"
    open_shared_blocks(shared).create("team", "short", limit=60_000)
    big = Memory.create(tmp_path / "big", system="s", config=MemoryConfig(window=32768))
    small = Agent.create(tmp_path / "small", system="s", driver=ScriptedDriver(
        [Completion(tool_calls=[call("send_message", message="ok")])]), config=CONFIG)
    big.attach_block("team", shared)
    small.memory.attach_block("team", shared)
    big.edit_block("team", BlockEdit.append(" ".join(f"fact{i}" for i in range(4000))))  # ~20k tokens
    result = small.step("What does the team block say?")  # the step runs
    assert result.replies == ["ok"]
    core = next(m["content"] for m in small.memory.compile() if str(m.get("content")).startswith("<core_memory>"))
    assert "more characters of this shared block do not fit this context" in core
    check_agent(small)
    for m in (big, small.memory):
        m.close()


def test_a_read_only_shared_block_refuses_the_agents_edit_as_a_function_error(tmp_path):
    open_shared_blocks(tmp_path / "shared.db").create("rules", "Be kind.", limit=100, read_only=True)
    agent = Agent.create(tmp_path / "ana", system="s", driver=ScriptedDriver([
        Completion(tool_calls=[call("core_memory_append", heartbeat=True, label="rules", content="Be rude.")]),
        Completion(tool_calls=[call("send_message", message="ok")])]), config=CONFIG)
    agent.memory.attach_block("rules", tmp_path / "shared.db")
    result = agent.step("change the rules")
    assert not result.calls[0].ok and "read-only" in result.calls[0].result
    assert open_shared_blocks(tmp_path / "shared.db").get("rules").value == "Be kind."
    check_agent(agent)
    agent.close()


@pytest.mark.postgres
def test_a_shared_block_in_the_agents_database_is_recorded_without_a_password(pg_server):
    """The agent's memory keeps where its shared blocks are; a password in the URL given to
    attach_block is not kept there: the agent's own database is reached with the agent's URL."""
    from urllib.parse import urlsplit, urlunsplit

    from vmem.storage.postgres_shared import database_url

    parts = urlsplit(pg_server.agent_url("ana"))
    user = parts.username or "postgres"
    with_password = urlunsplit((parts.scheme, f"{user}:s3cret@{parts.hostname}:{parts.port}", parts.path,
                                parts.query, ""))
    name = f"team-{uuid.uuid4().hex[:8]}"
    open_shared_blocks(database_url(with_password)).create(name, "notes", limit=100)
    with Memory.create(with_password, system="s", config=CONFIG) as m:
        m.attach_block("team", database_url(with_password), name)
        assert "s3cret" not in str(m.shared_blocks.location("team"))
    with Memory.open(with_password) as m:  # reopened: the block is found through the agent's own URL
        assert m.block("team").value == "notes"
        m.check(deep=True)


def test_an_edit_made_before_its_block_is_detached_in_the_same_transaction_still_applies(tmp_path):
    shared = tmp_path / "shared.db"
    open_shared_blocks(shared).create("team", "notes", limit=200)
    m = Memory.create(tmp_path / "ana", system="s", config=CONFIG)
    m.attach_block("team", shared)
    with m.transaction():
        m.edit_block("team", BlockEdit.append("decided: ship Friday"))
        m.delete_block("team")  # detached; the edit was made and commits with the transaction
    assert open_shared_blocks(shared).get("team").value == "notes\ndecided: ship Friday"
    with m.transaction():
        pass  # the next transaction confirms it and forgets it
    assert m._state.shared_edits == []
    m.check()
    m.close()
