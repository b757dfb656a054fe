"""Long silences (issue 19, item 3): a live line while the model thinks, on in a terminal and off
when piped; and at the end of chat and demo, what the memory did."""

from __future__ import annotations

import io
import time
from pathlib import Path

from test_cli import vmem

from fake_openai_server import FakeOpenAIServer, Reply
from vmem.app.activity import activity, session_start
from vmem.app.progress import CallTiming, Progress
from vmem.kernel import Agent
from vmem.kernel.drivers import Completion, Driver, ScriptedDriver, Usage


class Slow(Driver):
    """Answers after ``seconds``, with usage."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def complete(self, messages, tools) -> Completion:  # noqa: ANN001
        time.sleep(self.seconds)
        return Completion(text="ok", usage=Usage(1000, 50, 900))


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_slow_call_shows_a_live_line_then_its_figures() -> None:
    stream = Tty()
    progress = Progress(stream, enabled=True, after=0.05, every=0.05)
    progress.stage = "message 1"
    driver = progress.wrap(Slow(0.4))
    assert driver.complete([{"role": "user", "content": "hi"}], [{"type": "function"}]).text == "ok"
    out = stream.getvalue()
    assert out.count("⋯ message 1: waiting for the model") >= 2  # redrawn while it waits
    last = out.rsplit("\r\x1b[K", 1)[1]
    assert last.startswith("  · message 1: LLM call 0.") and last.endswith("\n")
    assert "prompt 1,000 tokens (900 from the server's cache)" in last and "50 generated" in last
    assert "tokens/s" in last
    timing = progress.calls[0]
    assert timing.purpose == "step" and timing.seconds >= 0.4
    assert timing.tokens_per_second == (100 + 50) / timing.seconds  # evaluated prompt + generated


def test_a_fast_call_and_a_disabled_progress_write_nothing() -> None:
    stream = Tty()
    Progress(stream, enabled=True, after=5).wrap(Slow(0)).complete([], [])
    quiet = io.StringIO()
    off = Progress(quiet, enabled=False, after=0, every=0.01)
    off.wrap(Slow(0.1)).complete([], [])
    assert stream.getvalue() == "" and quiet.getvalue() == ""
    assert [c.purpose for c in off.calls] == ["summary"]  # counted all the same (no tools: a summary call)
    assert not Progress.auto(io.StringIO()) and Progress.auto(Tty())


def test_a_failed_call_is_said_and_raised() -> None:
    class Broken(Driver):
        def complete(self, messages, tools):  # noqa: ANN001
            time.sleep(0.2)
            raise RuntimeError("down")

    stream = Tty()
    progress = Progress(stream, enabled=True, after=0.01, every=0.05)
    try:
        progress.wrap(Broken()).complete([], [{"type": "function"}])
    except RuntimeError:
        pass
    else:
        raise AssertionError("the driver's error must reach the caller")
    assert stream.getvalue().endswith("waiting for the model: failed\n")
    assert progress.calls[0].usage is None and CallTiming("step", 1.0, None).line() == "LLM call 1.0 s"


def test_activity_counts_what_the_memory_did(tmp_path: Path) -> None:
    script = [
        {"name": "core_memory_append", "arguments": {"label": "human", "content": "Ana", "request_heartbeat": True}},
        {"name": "send_message", "arguments": {"message": "hi Ana"}},
        {"name": "archival_memory_search", "arguments": {"query": "Ana", "request_heartbeat": True}},
        {"name": "core_memory_replace", "arguments": {"label": "human", "old_content": "nope", "new_content": "x",
                                                      "request_heartbeat": True}},
        {"name": "send_message", "arguments": {"message": "nothing found"}},
    ]
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": "", "persona": "p"},
                         driver=ScriptedDriver(script))
    agent.step("I'm Ana")
    start = session_start(agent.memory.store)
    agent.step("what do you know?")
    whole = activity(agent.memory.store.events)
    assert whole.calls == {"core_memory_append": 1, "send_message": 2, "archival_memory_search": 1,
                           "core_memory_replace": 1}
    assert whole.failed == {"core_memory_replace": 1} and whole.blocks == ["human"]
    assert whole.page_faults == 1 and whole.user_messages == 2 and whole.llm_calls == 5
    assert whole.cache_ratio is None  # the scripted driver reports no cached tokens
    later = activity(agent.memory.store.events.read(after=start))
    assert later.blocks == [] and later.user_messages == 1 and later.page_faults == 1
    lines = later.lines()
    assert lines[0] == ("memory functions called: archival_memory_search ×1, core_memory_replace ×1 (1 failed), "
                        "send_message ×1")
    assert "core memory blocks changed: none" in lines
    agent.close()


def test_a_model_that_never_uses_its_memory_is_told() -> None:
    lines = activity([{"e": "user"}, {"e": "llm", "purpose": "step", "completion": {}},
                      {"e": "call", "name": "send_message", "ok": True}]).lines()
    assert "did not use its memory" in lines[1]


def test_chat_ends_with_what_the_memory_did_and_no_progress_when_piped(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        server.push(
            Reply.tool_calls(("core_memory_append", {"label": "human", "content": "Name: Ana",
                                                     "request_heartbeat": True})).after(1.5),
            Reply.tool_calls(("send_message", {"message": "Nice to meet you, Ana!"})),
        )
        p = vmem("chat", str(tmp_path / "a"), "--model", "m", "--base-url", server.base_url, stdin="Hi, I'm Ana\n")
        assert p.returncode == 0, p.stderr
        assert p.stderr == ""  # piped: no progress line
        session = p.stdout.split("session:\n", 1)[1]
        assert "memory functions called: core_memory_append ×1, send_message ×1" in session
        assert "core memory blocks changed: human" in session
        assert "page faults: 0 search(es) by the model" in session
        server.push(
            Reply.tool_calls(("send_message", {"message": "Hello again"})).after(1.5),
        )
        p = vmem("chat", str(tmp_path / "a"), "--model", "m", "--base-url", server.base_url, "--progress", "always",
                 stdin="hello\n")
        assert p.returncode == 0, p.stderr
        assert "⋯ message 1: waiting for the model 1 s" in p.stderr
        assert "· message 1: LLM call 1." in p.stderr and "prompt 10 tokens" in p.stderr
        assert "core memory blocks changed: none" in p.stdout


def test_demo_with_a_model_reports_the_blocks_it_changed(tmp_path: Path) -> None:
    def answer(req):  # noqa: ANN001
        if not req.tools:
            return Reply.text("a summary")
        if any(m["role"] == "tool" for m in req.messages[-1:]):
            return Reply.tool_calls(("send_message", {"message": "noted"}))
        return Reply.tool_calls(("core_memory_append", {"label": "human", "content": "a fact",
                                                        "request_heartbeat": True}))

    with FakeOpenAIServer(handler=answer) as server:
        p = vmem("demo", "-q", "--base-url", server.base_url, "--model", "m", "--progress", "never", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "core memory blocks changed: human" in p.stdout and p.stderr == ""
