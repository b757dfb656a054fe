"""``vmem consolidate``: the daemon as its own process over an agent's directory (subprocesses,
a scripted OpenAI-compatible server)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from fake_openai_server import FakeOpenAIServer, Reply
from test_cli import assert_clean_error, vmem

from vmem.kernel import Memory, read_trace
from vmem.app.consolidate import pending, run_loop, run_once
from vmem.kernel.drivers import ScriptedDriver
from vmem.storage import StoreLockedError

import pytest

T0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=dt.timezone.utc)


def make(path: Path, turns: int) -> None:
    clock = iter(T0 + dt.timedelta(hours=h) for h in range(1, 1000))
    with Memory.create(path, system="sys", blocks={"human": "", "persona": "helpful"},
                       clock=lambda: next(clock)) as memory:
        for i in range(turns):
            memory.append({"role": "user", "content": f"fact number {i}: I like thing {i}"})
            memory.append({"role": "assistant", "content": "noted"})


def test_help() -> None:
    p = vmem("consolidate", "--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: vmem consolidate")
    for flag in ("--loop", "--every", "--idle", "--max-runs", "--until-idle", "--lock-timeout", "--base-url",
                 "--checks", "--picks"):
        assert flag in p.stdout
    assert "consolidate" in vmem("--help").stdout
    from vmem.kernel.consolidation import CHECKS, PICKS
    text = " ".join(p.stdout.split())
    assert f"(default {CHECKS})" in text and f"(default {PICKS};" in text  # the command's defaults are the daemon's


def test_one_run_against_a_server(tmp_path: Path) -> None:
    agent = tmp_path / "agent"
    make(agent, 2)
    with FakeOpenAIServer() as server:
        server.push(Reply.text('Here you go:\n```json\n{"human": ["likes: thing 0, thing 1"], '
                               '"facts": ["Ana likes thing 1", {"fact": "x", "replaces": 5}]}\n```'))
        p = vmem("consolidate", str(agent), "--model", "small", "--base-url", server.base_url)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == ("vmem consolidate: messages 1-4: 4 proposed, applied 1 block line, 2 facts; "
                                    "skipped 1 malformed")  # the block's line is a fact too
        prompt = server.chat_requests[0].messages[1]["content"]
        assert "fact number 1: I like thing 1" in prompt and server.chat_requests[0].body["model"] == "small"
        again = vmem("consolidate", str(agent), "--model", "small", "--base-url", server.base_url)
        assert again.returncode == 0 and "nothing new" in again.stdout and len(server.chat_requests) == 1
    with Memory.open(agent, read_only=True) as memory:
        assert memory.block("human").value == "likes: thing 0, thing 1"
        assert memory.consolidation_cursor == 4
        memory.check()
    inspected = vmem("inspect", str(agent))
    assert "consolidation of messages 1-4: 3 applied, 1 skipped of 4 proposed" in inspected.stdout


def test_loop_until_idle_in_batches_and_max_runs(tmp_path: Path) -> None:
    agent = tmp_path / "agent"
    make(agent, 3)
    with FakeOpenAIServer(handler=lambda req: Reply.text('{"facts": []}')) as server:
        p = vmem("consolidate", str(agent), "--model", "m", "--base-url", server.base_url, "--loop", "--until-idle",
                 "--interval", "0.01", "--json")
        assert p.returncode == 0, p.stderr
        runs = [json.loads(line) for line in p.stdout.splitlines()]
        assert [(r["start"], r["end"]) for r in runs] == [(0, 6)]
        make(agent2 := tmp_path / "agent2", 3)
        p = vmem("consolidate", str(agent2), "--model", "m", "--base-url", server.base_url, "--loop", "--every", "1",
                 "--max-runs", "1", "--interval", "0.01")
        assert p.returncode == 0 and p.stdout.count("vmem consolidate: messages 1-6") == 1


def test_in_process_loop_reads_a_long_backlog_in_batches(tmp_path: Path) -> None:
    make(tmp_path / "a", 12)
    driver = ScriptedDriver(lambda messages, tools: '{"facts": []}')
    reports = []
    assert run_loop(tmp_path / "a", driver, until_idle=True, interval=0.01, max_chars=200,
                    on_report=reports.append) == len(reports) > 1
    assert reports[0].start == 0 and all(a.end == b.start for a, b in zip(reports, reports[1:]))
    assert reports[-1].end == 24 and pending(tmp_path / "a") == (0, 0)


def test_the_daemon_waits_for_the_agents_lock_then_gives_up_cleanly(tmp_path: Path) -> None:
    make(tmp_path / "a", 1)
    driver = ScriptedDriver(lambda messages, tools: '{"human": ["x: y"]}')
    with Memory.open(tmp_path / "a") as holder:  # an agent process holds the store
        with pytest.raises(StoreLockedError):
            run_once(tmp_path / "a", driver, lock_timeout=0.1)
        assert holder.block("human").value == "" and holder.consolidation_cursor == 0
    assert run_once(tmp_path / "a", driver).applied == 2  # the next run reads the same turns: the line, its fact
    with Memory.open(tmp_path / "a", read_only=True) as memory:
        assert [e["end"] for e in read_trace(memory.store) if e["e"] == "consolidate"] == [2]


def test_bad_input(tmp_path: Path) -> None:
    assert_clean_error(vmem("consolidate", str(tmp_path / "none"), "--model", "m", "--base-url", "http://x"), 2,
                       "does not exist")
    make(tmp_path / "a", 1)
    assert_clean_error(vmem("consolidate", str(tmp_path / "a"), "--base-url", "http://x"), 2, "no model")
    assert_clean_error(vmem("consolidate", str(tmp_path / "a"), "--model", "m", "--base-url", "http://x",
                            "--max-runs", "1"), 2, "go with --loop")
    assert_clean_error(vmem("consolidate", str(tmp_path / "a"), "--model", "m", "--base-url", "http://x", "--loop",
                            "--interval", "0"), 2, "--interval")
    assert_clean_error(vmem("consolidate", str(tmp_path / "a"), "--model", "m", "--base-url", "http://x",
                            "--picks", "-1"), 2, "--picks")


def test_the_demo_with_a_daemon_beside_its_agent(tmp_path: Path) -> None:
    import io

    from vmem.app.demo import RuleBasedPolicy, run_demo

    def daemon_model(messages: list[dict], tools: list[dict]) -> str:
        if messages[-1]["content"].startswith("Old fact:"):  # does a new fact replace a known one?
            return '{"replaced": false}'
        said = [line for line in messages[-1]["content"].splitlines() if "] user: " in line]
        if not said:
            return '{"facts": []}'
        return '{"human": ["last said: %s"], "facts": ["%s"]}' % (said[-1].split("] user: ")[1][:40].replace('"', ""),
                                                                said[0].split("] user: ")[1][:80].replace('"', ""))

    out = io.StringIO()
    code, report = run_demo(out, driver=RuleBasedPolicy(), model="rules", directory=tmp_path / "demo",
                            daemon=ScriptedDriver(daemon_model), daemon_every=3)
    assert code == 0, out.getvalue()[-2000:]
    assert report.daemon_runs >= 3 and report.daemon_applied > 0 and "call failed" not in out.getvalue()
    assert "kswpd consolidated messages 1-" in out.getvalue()
    with Memory.open(tmp_path / "demo", read_only=True) as memory:
        assert "last said:" in memory.block("human").value
        assert memory.consolidation_cursor == memory.stats.recall  # every session ends consolidated
        memory.check()


def test_chat_with_the_daemon_in_process(tmp_path: Path) -> None:
    agent = tmp_path / "agent"

    def answer(req) -> Reply:
        if req.tools:  # the agent's step
            return Reply.tool_calls(("send_message", {"message": "ok"}))
        assert req.body["model"] == "small"  # the daemon's own model
        return Reply.text('{"human": ["name: Ana"], "facts": ["Ana lives in Porto"]}')

    with FakeOpenAIServer(handler=answer) as server:
        p = vmem("chat", str(agent), "--model", "big", "--base-url", server.base_url, "--daemon", "--daemon-model",
                 "small", "--daemon-every", "2", stdin="Hi, I'm Ana.\nI live in Porto.\n")
        assert p.returncode == 0, p.stderr
        assert "consolidation daemon" not in p.stderr  # no run failed
    with Memory.open(agent, read_only=True) as memory:  # the run started after 2 turns finished before exit
        assert "name: Ana" in memory.block("human").value
        assert memory.consolidation_cursor == memory.stats.recall
        memory.check()
    bad = vmem("chat", str(agent), "--model", "big", "--base-url", "http://127.0.0.1:9", "--daemon",
               "--daemon-every", "0", "--daemon-idle", "0", stdin="")
    assert_clean_error(bad, 2, "--daemon-every")


def test_a_run_of_its_own_looks_up_the_facts_a_new_one_may_replace(tmp_path: Path) -> None:
    """run_once reads through its read-only open, after the model's answer, the stored facts the new
    fact's own words find (the turn said "plants", the fact "houseplants"), and asks about them."""
    with Memory.create(tmp_path / "a", system="sys", blocks={"human": ""}, clock=lambda: T0) as memory:
        old = memory.archival_insert("I have 12 houseplants, mostly succulents.")[0]
        memory.append({"role": "user", "content": "The collection got out of hand: 31 plants now."})
    driver = ScriptedDriver(['{"facts": ["The number of houseplants is now 31"]}', '{"replaced": true}'])
    report = run_once(tmp_path / "a", driver)
    assert [op["op"] for op in report.ops] == ["fact", "supersede"] and report.ops[1]["old"] == [old]
    with Memory.open(tmp_path / "a", read_only=True) as memory:
        assert not memory.store.archival.get(old).current
        memory.check()


def test_a_run_of_its_own_asks_which_fact_a_new_one_is_about_unless_told_not_to(tmp_path: Path) -> None:
    """The update shares no word with the daemon's stored fact: only the "which one" call finds it;
    ``picks=0`` (``--picks 0``) makes no such call (a scripted driver with one answer would run out)."""
    from vmem.kernel.consolidation import FACT_TAG

    for path in (tmp_path / "off", tmp_path / "on"):
        with Memory.create(path, system="sys", blocks={"human": ""}, clock=lambda: T0) as memory:
            memory.archival_insert("Hair dyed copper red", tags=(FACT_TAG,))
            memory.append({"role": "user", "content": "Came out of the salon platinum blonde."})
    report = run_once(tmp_path / "off", ScriptedDriver(['{"facts": ["Platinum blonde now"]}']), picks=0)
    assert [op["op"] for op in report.ops] == ["fact"]
    driver = ScriptedDriver(['{"facts": ["Platinum blonde now"]}', '{"same": 1}', '{"replaced": true}'])
    report = run_once(tmp_path / "on", driver)
    assert [(op["op"], op.get("why")) for op in report.ops] == [("fact", None), ("supersede", "picked")]
    with Memory.open(tmp_path / "on", read_only=True) as memory:
        assert [p.text for p in memory.store.archival.search(None, page_size=5).items if not p.current] == [
            "Hair dyed copper red"]
        memory.check()
