"""The ``vmem`` command line, run as a subprocess: demo, chat, inspect, eval, help and bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fake_openai_server import FakeOpenAIServer, Reply

ROOT = Path(__file__).resolve().parents[1]
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# no model, server or key from the developer's environment may leak into the tests
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if k not in ("VMEM_MODEL", "VMEM_BASE_URL", "VMEM_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                          "VMEM_TOOL_MODE", "NO_COLOR", "VMEM_DEBUG")}


def vmem(*args: str, stdin: str | None = None, cwd: Path | None = None, env: dict[str, str] | None = None,
         timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m vmem.app.cli ARGS`` and capture its output."""
    return subprocess.run([sys.executable, "-m", "vmem.app.cli", *args], input=stdin, capture_output=True,
                          text=True, cwd=cwd or ROOT, env={**CLEAN_ENV, **(env or {}), "PYTHONPATH": str(ROOT)},
                          timeout=timeout)


def assert_clean_error(p: subprocess.CompletedProcess[str], code: int, *fragments: str) -> None:
    """A nonzero exit with one clear line on stderr and no traceback."""
    assert p.returncode == code, (p.returncode, p.stdout, p.stderr)
    assert "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("vmem: error: "), p.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    """One full demo run whose agent directory is kept (for the inspect tests)."""
    agent_dir = tmp_path_factory.mktemp("demo") / "agent"
    return vmem("demo", "--dir", str(agent_dir)), agent_dir


# ---------------------------------------------------------------- demo


def test_demo_runs_the_main_job_and_shows_what_moved(demo_run) -> None:
    p, agent_dir = demo_run
    out = p.stdout
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Traceback" not in p.stderr
    assert "RuleBasedPolicy" in out and "not a language model" in out
    assert ANSI.search(out) is None  # not a terminal: no colour
    # the kernel's memory-pressure alert and flushes into a recursive summary, more than once
    assert "alert warning watermark crossed" in out
    folds = [int(n) for n in re.findall(r"recursive summary \(fold (\d+):", out)]
    assert len(folds) >= 2 and folds == list(range(1, len(folds) + 1))
    # the context map after steps, in every state
    assert out.count("(^ watermarks: warn 70%, flush 100%)") >= 20
    assert re.search(r"tokens \(\d+%\) WARN", out)
    # page faults and prefetch
    assert "← page fault" in out and "conversation_search(" in out and "archival_memory_search(" in out
    assert "kernel prefetched" in out and "from  working set ✓" in out
    assert "core_memory_replace(" in out and "archival_memory_insert(" in out
    # the reopen, with equal digests
    before = re.search(r"state digest before close: ([0-9a-f]{64})", out).group(1)
    after = re.search(r"state digest after open: +([0-9a-f]{64})", out).group(1)
    assert before == after
    # answers, each checked against the fact it must contain
    assert "You live in Porto." in out
    assert "Your colleague Rui will look after Pixel" in out
    assert re.search(r'On 16 March you told me: ".*Japan', out)
    answers = re.search(r"answers: (\d+)/(\d+) with the expected fact", out)
    assert answers and answers.group(1) == answers.group(2) and int(answers.group(2)) >= 8
    assert "✗" not in out and "FAILED" not in out
    assert agent_dir.is_dir() and (agent_dir / "vmem.db").exists()  # --dir keeps it


def test_demo_is_reproducible_quiet_and_coloured_on_request(demo_run) -> None:
    full, _ = demo_run
    quiet = vmem("demo", "--quiet", "--color", "always")
    assert quiet.returncode == 0, quiet.stderr
    assert ANSI.search(quiet.stdout)  # --color always colours even into a pipe
    plain = ANSI.sub("", quiet.stdout)
    assert "\nuser " not in plain and "[SS" not in plain and "── session" not in plain  # only the summary
    summary = plain[plain.index("summary"):]
    # the same run, same numbers (deterministic policy, fixed clock), up to the wall time
    strip_time = re.compile(r"; [0-9.]+ s$", re.M)
    assert strip_time.sub("", summary).strip() == strip_time.sub("", full.stdout[full.stdout.index("\nsummary\n"):]
                                                                  ).split("the agent is kept in")[0].strip()


def test_demo_refuses_a_dir_that_is_not_new(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("mine")
    assert_clean_error(vmem("demo", "--dir", str(tmp_path)), 2, "not an empty directory")
    assert (tmp_path / "x.txt").read_text() == "mine" and not (tmp_path / "vmem.db").exists()


# ---------------------------------------------------------------- chat


def test_chat_against_an_openai_compatible_server(tmp_path: Path) -> None:
    agent_dir = tmp_path / "agent"
    with FakeOpenAIServer() as server:
        server.push(
            Reply.tool_calls(("core_memory_append", {"label": "human", "content": "Name: Ana",
                                                     "request_heartbeat": True})),
            Reply.tool_calls(("send_message", {"message": "Nice to meet you, Ana!"})),
            Reply.tool_calls(("archival_memory_search", {"query": "surf", "request_heartbeat": True})),
            Reply.text("I have nothing about surfing yet."),
        )
        stdin = "Hi, I'm Ana\n/core\n/map\nwhere do I surf?\n/recall Ana\n/archival surf\n/nope\n/help\n/quit\nlost\n"
        p = vmem("chat", str(agent_dir), "--model", "fake-model", "--base-url", server.base_url, "--window", "4096",
                 stdin=stdin)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "agent created in" in p.stdout
        assert "core_memory_append(label=\"human\", content=\"Name: Ana\") ok" in p.stdout
        assert "agent › Nice to meet you, Ana!" in p.stdout
        assert "[human] 9/2000 chars\n  Name: Ana" in p.stdout  # /core
        assert "(^ watermarks: warn 70%, flush 100%)" in p.stdout  # /map
        assert "archival_memory_search(query=\"surf\") ok" in p.stdout
        assert "agent › I have nothing about surfing yet." in p.stdout
        assert "· user] Hi, I'm Ana" in p.stdout  # /recall
        assert "no match" in p.stdout  # /archival surf: nothing saved
        assert "unknown command /nope" in p.stdout and "/recall QUERY" in p.stdout
        requests = server.chat_requests
        assert len(requests) == 4 and server.pending == 0  # /quit: "lost" was never sent
        assert requests[0].body["model"] == "fake-model"
        assert [m for m in requests[0].messages if m["role"] != "system"][-1] == {"role": "user", "content": "Hi, I'm Ana"}
        assert {t["function"]["name"] for t in requests[0].tools} >= {"send_message", "archival_memory_search"}

        # the agent persists: a second session reopens it (the server is not called for commands)
        again = vmem("chat", str(agent_dir), "--model", "fake-model", "--base-url", server.base_url,
                     "--window", "2048", stdin="/core\n")
        assert again.returncode == 0, again.stderr
        assert "agent reopened in" in again.stdout and "Name: Ana" in again.stdout
        assert "--window ignored" in again.stderr
        assert len(server.chat_requests) == 4


def test_chat_reports_server_errors_and_goes_on(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.push(Reply.error(401, "Incorrect API key provided", type="invalid_request_error"),
                    Reply.tool_calls(("send_message", {"message": "back again"})))
        p = vmem("chat", str(tmp_path / "a"), "--model", "m", "--base-url", server.base_url,
                 stdin="first\nsecond\n")
    assert p.returncode == 1  # a message failed
    assert "Traceback" not in p.stderr
    assert "Incorrect API key provided" in p.stderr and "nothing was changed: send it again" in p.stderr
    assert "agent › back again" in p.stdout


def test_chat_without_a_model_or_server_is_a_usage_error(tmp_path: Path) -> None:
    target = tmp_path / "agent"
    assert_clean_error(vmem("chat", str(target), stdin=""), 2, "no model", "--model")
    assert_clean_error(vmem("chat", str(target), "--model", "m", stdin=""), 2, "no server", "--base-url")
    small = vmem("chat", str(target), "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--window", "600",
                 stdin="")
    assert_clean_error(small, 2, "--window 600 is too small", "tool schemas")
    assert not target.exists()  # nothing was created, nothing left behind
    empty = tmp_path / "empty"
    empty.mkdir()
    small = vmem("chat", str(empty), "--model", "m", "--base-url", "http://127.0.0.1:9/v1", "--window", "600",
                 stdin="")
    assert_clean_error(small, 2, "too small")
    assert empty.is_dir() and not any(empty.iterdir())  # the user's directory is kept, and left empty
    # the environment can name both
    with FakeOpenAIServer() as server:
        url = server.base_url
        p = vmem("chat", str(target), stdin="/quit\n", env={"VMEM_MODEL": "m", "VMEM_BASE_URL": url})
    assert p.returncode == 0 and f"model m at {url}" in p.stdout


def test_chat_refuses_a_directory_that_is_not_an_agents(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    p = vmem("chat", str(tmp_path), "--model", "m", "--base-url", "http://127.0.0.1:9/v1", stdin="")
    assert_clean_error(p, 2, "holds no vmem agent")


# ---------------------------------------------------------------- inspect


def _files(directory: Path) -> dict[str, bytes]:
    """Every file's bytes but SQLite's shared-memory index and an empty WAL (a reader opens both) and the lock."""
    return {f.name: f.read_bytes() for f in directory.iterdir() if f.is_file() and not f.name.endswith("-shm")
            and f.name != "lock" and not (f.name.endswith("-wal") and not f.stat().st_size)}


def test_inspect_shows_the_agent_without_changing_it(demo_run, tmp_path: Path) -> None:
    _, agent_dir = demo_run
    db = agent_dir / "vmem.db"
    before = _files(agent_dir)
    p = vmem("inspect", str(agent_dir), "--events", "7")
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for heading in ("context map", "core memory", "summary (", "queue:", "working set:", "storage",
                    "trace: last 7 of"):
        assert heading in out, heading
    assert "Lives in: Porto" in out and "Allergic to: peanuts" in out
    assert "Running summary (fold" in out
    assert re.search(r"recall: \d+ messages · archival: 1\d passages", out)
    assert len(re.findall(r"^ +\d+ 2024-04-02T", out, re.M)) == 7
    assert _files(agent_dir) == before  # nothing was written
    # a second inspect shows exactly the same
    html = tmp_path / "agent.html"
    q = vmem("inspect", str(agent_dir), "--events", "7", "--html", str(html))
    assert q.returncode == 0 and q.stdout.startswith(out)
    page = html.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and '<svg id="context-chart"' in page
    assert page.count('<tr class="passage">') == int(re.search(r"archival: (\d+) passages", out).group(1))
    assert db.exists()


def test_inspect_bad_input_is_one_clear_line(tmp_path: Path) -> None:
    assert_clean_error(vmem("inspect", str(tmp_path / "missing")), 2, "does not exist")
    afile = tmp_path / "file"
    afile.write_text("x")
    assert_clean_error(vmem("inspect", str(afile)), 2, "is a file")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_clean_error(vmem("inspect", str(empty)), 2, "holds no vmem agent")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "vmem.db").write_bytes(b"this is not a database" * 100)
    assert_clean_error(vmem("inspect", str(corrupt)), 1, "not a vmem store")


def test_inspect_a_damaged_store(demo_run, tmp_path: Path) -> None:
    import shutil

    _, agent_dir = demo_run
    copy = tmp_path / "copy"
    shutil.copytree(agent_dir, copy)
    db = copy / "vmem.db"
    data = bytearray(db.read_bytes())
    for i in range(4096, min(len(data), 4096 * 6)):  # trash pages 2-6 (schema and tables)
        data[i] = (i * 7919) % 251
    db.write_bytes(bytes(data))
    for extra in ("vmem.db-wal", "vmem.db-shm"):
        (copy / extra).unlink(missing_ok=True)
    assert_clean_error(vmem("inspect", str(copy)), 1, "damaged")


# ---------------------------------------------------------------- eval


def _locomo_file(path: Path) -> Path:
    """A tiny LoCoMo-format file: two conversations of 30 turns, questions with unique evidence words."""
    topics = ["violin", "kayak", "sourdough", "telescope", "origami", "chess", "pottery", "salsa", "bonsai",
              "falconry", "juggling", "calligraphy", "beekeeping", "archery", "knitting"]
    samples = []
    for c in range(2):
        conv: dict[str, object] = {"speaker_a": "Ann", "speaker_b": "Bob"}
        qa = []
        for s in (1, 2):
            conv[f"session_{s}_date_time"] = f"{s}:15 pm on {s + 3} May, 2023"
            turns = []
            for t in range(1, 16):
                topic = topics[(t + 7 * c + 3 * s) % len(topics)]
                speaker = "Ann" if t % 2 else "Bob"
                turns.append({"speaker": speaker, "dia_id": f"D{s}:{t}",
                              "text": f"Yesterday I spent the afternoon on {topic} with my cousin number {t}."})
                if t % 5 == 0:
                    qa.append({"question": f"When did {speaker} practise {topic} with cousin number {t}?",
                               "answer": "yesterday", "evidence": [f"D{s}:{t}"], "category": 1 + (t // 5) % 3})
            conv[f"session_{s}"] = turns
        samples.append({"sample_id": f"conv-{c}", "conversation": conv, "qa": qa})
    path.write_text(json.dumps(samples), encoding="utf-8")
    return path


def test_eval_locomo_json_shape_and_table(tmp_path: Path) -> None:
    data = _locomo_file(tmp_path / "tiny_locomo.json")
    p = vmem("eval", "locomo", str(data), "--json", "--no-progress")
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert sorted(result) == ["hybrid", "text", "vector"]
    for r in result.values():
        assert set(r) == {"overall", "by_category"}
        assert list(r["overall"]) == ["5", "10", "25"]
        assert set(r["by_category"]) == {"multi-hop", "temporal", "open-domain"}
        for row in [r["overall"], *r["by_category"].values()]:
            assert all(0.0 <= row[k] <= 1.0 for k in ("5", "10", "25"))
            assert row["5"] <= row["10"] <= row["25"]
    # each question names its turn's unique words: exact-word search finds every evidence turn in the top 5
    assert result["text"]["overall"] == {"5": 1.0, "10": 1.0, "25": 1.0}
    table = vmem("eval", "locomo", str(data), "--no-progress")
    assert table.returncode == 0, table.stderr
    assert "DRAGON (paper)" in table.stdout and "58.8" in table.stdout and "79.9" in table.stdout
    assert re.search(r"^text +100\.0 +100\.0 +100\.0$", table.stdout, re.M)
    assert "multi-hop (4 questions)" in table.stdout


def test_eval_locomo_bad_input(tmp_path: Path) -> None:
    # the default path is ../shared/... relative to the current directory: absent here
    assert_clean_error(vmem("eval", "locomo", cwd=tmp_path), 2, "no LoCoMo file at", "shared",
                       "github.com/snap-research/LoCoMo")  # where to get it (issue 19, item 11)
    assert_clean_error(vmem("eval", "locomo", str(tmp_path / "none.json")), 2, "no LoCoMo file")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_clean_error(vmem("eval", "locomo", str(bad), "--no-progress"), 1, "not a LoCoMo file")
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"no": "conversation"}]))
    assert_clean_error(vmem("eval", "locomo", str(wrong), "--no-progress"), 1, "not a LoCoMo file")
    data = _locomo_file(tmp_path / "ok.json")
    assert_clean_error(vmem("eval", "locomo", str(data), "--modes", "text,psychic", "--no-progress"), 2, "psychic")


# ---------------------------------------------------------------- help and usage


@pytest.mark.parametrize("args", [(), ("demo",), ("chat",), ("inspect",), ("eval",), ("eval", "locomo")])
def test_help_everywhere(args: tuple[str, ...]) -> None:
    p = vmem(*args, "--help")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("usage: vmem" + "".join(" " + a for a in args))
    if not args:
        assert "exit codes:" in p.stdout
        for command in ("demo", "chat", "inspect", "eval"):
            assert re.search(rf"^    {command} ", p.stdout, re.M), command
        for code in ("0 ", "1 ", "2 ", "130 "):
            assert re.search(rf"^  {code}", p.stdout, re.M), code


def test_usage_errors_exit_2() -> None:
    none = vmem()
    assert none.returncode == 2 and "usage: vmem" in none.stdout
    unknown = vmem("frobnicate")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr and "Traceback" not in unknown.stderr
    assert vmem("inspect").returncode == 2  # DIR is required
    assert vmem("demo", "--color", "sometimes").returncode == 2


# ---------------------------------------------------------------- the demo's policy (in process)


def test_rule_based_policy_folds_summaries_deterministically_within_the_limit() -> None:
    from vmem.kernel.summary import SUMMARIZER_PROMPT
    from vmem.app.demo import RuleBasedPolicy

    system = SUMMARIZER_PROMPT.format(words=40)
    first = RuleBasedPolicy.fold(system, "Previous summary:\n(none)\n\nMessages to fold in:\n"
                                         "user: I have a cat called Miso. Where is my hat?\nassistant: Noted.")
    assert first.splitlines()[0].startswith("Running summary (fold 1, 2 messages)")
    assert "- said: I have a cat called Miso." in first and "- asked: Where is my hat?" in first
    lines = "\n".join(f"user: Fact number {n} is about the colour of house {n}." for n in range(10))
    second = RuleBasedPolicy.fold(system, f"Previous summary:\n{first}\n\nMessages to fold in:\n{lines}")
    assert second == RuleBasedPolicy.fold(system, f"Previous summary:\n{first}\n\nMessages to fold in:\n{lines}")
    assert second.startswith("Running summary (fold 2, 12 messages)")
    assert len(second.split()) <= 40 + 12  # the items fit the limit; the header and the note are small
    assert "Where is my hat?" not in second  # questions go first, then the oldest statements
    assert "Fact number 9 " in second and "older items dropped" in second


def test_rule_based_policy_goes_on_when_the_user_message_was_flushed_mid_step() -> None:
    from vmem.app.demo import RuleBasedPolicy

    policy = RuleBasedPolicy()
    core = {"role": "system", "content": "<core_memory>\n<human>\n\n</human>\n</core_memory>"}
    calls = policy.complete([core, {"role": "user", "content": "Hi! My name is Zoe."}], [{"type": "function"}])
    assert [(c.name, c.arguments) for c in calls.tool_calls] == [
        ("core_memory_append", {"label": "human", "content": "Name: Zoe", "request_heartbeat": True})]
    def assistant(cid: str, name: str, arguments: str) -> dict:
        return {"role": "assistant", "content": None,
                "tool_calls": [{"id": cid, "type": "function", "function": {"name": name, "arguments": arguments}}]}

    earlier = [  # the previous step: it archived something, then replied
        assistant("a", "archival_memory_insert", '{"content": "I like tea.", "tags": ["food"]}'),
        {"role": "tool", "tool_call_id": "a", "content": '{"status": "OK"}'},
        assistant("b", "send_message", '{"message": "noted"}'),
        {"role": "tool", "tool_call_id": "b", "content": "sent"},
    ]
    this = {"role": "assistant", "content": None, "tool_calls": [c.to_openai() for c in calls.tool_calls]}
    result = {"role": "tool", "tool_call_id": calls.tool_calls[0].id, "content": '{"status": "OK"}'}
    # the queue manager evicted the user message: this step's call and result remain, behind the earlier step
    nxt = policy.complete([core, *earlier, this, result], [{"type": "function"}])
    assert policy.orphaned == 1
    assert [c.name for c in nxt.tool_calls] == ["send_message"]
    assert nxt.tool_calls[0].arguments == {"message": "Got it: I updated your core memory."}
