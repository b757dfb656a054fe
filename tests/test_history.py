"""The inspector's history picture: the trace read into steps, drawn as SVG, rendered in Chromium."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_inspect_html import _chromium, _Elements, _render
from vmem.app.history import MAX_COLUMNS, MAX_TOOLTIPS, History, HistoryBuilder, describe, render_history_svg
from vmem.kernel import Agent, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall, Usage

ROOT = Path(__file__).resolve().parents[1]


def context(queue: int, budget: int = 1000, **more: int) -> dict:
    return {"e": "context", "time": 1.7e9, "budget": budget,
            "tokens": {"system": 100, "core": 50, "summary": more.get("summary", 0), "queue": queue, "workset": 0}}


def llm(prompt: int, cached: int | None = None, purpose: str = "step") -> dict:
    usage = {"prompt_tokens": prompt, "completion_tokens": 5}
    if cached is not None:
        usage["cached_tokens"] = cached
    return {"e": "llm", "purpose": purpose, "completion": {"text": "x", "usage": usage}}


def build(events: list[dict]) -> History:
    b = HistoryBuilder()
    for e in events:
        b.add(e)
    return b.history(warn=0.7, flush=1.0)


def test_events_become_steps_with_their_marks():
    h = build([
        {"e": "create"}, {"e": "user", "text": "hi", "time": 1.7e9},
        {"e": "pagein", "admitted": [1], "evicted": []},            # prefetch, before the call's context
        context(200), llm(400, 0),
        {"e": "pagein", "admitted": [2], "evicted": []},            # a page fault: the search call follows
        {"e": "call", "name": "archival_memory_search", "ok": True},
        context(600), llm(800, 600), llm(90, purpose="summary"),    # a summary call is not a step
        {"e": "alert", "used": 900, "budget": 1000}, {"e": "flush", "evicted": [1, 2]},
        context(300, summary=80), llm(500),
        {"e": "call", "name": "core_memory_append", "ok": True},   # not a page fault
        "not an event",
    ])
    assert [s.index for s in h.steps] == [1, 2, 3]
    assert [s.marks for s in h.steps] == [["prefetch", "fault"], [], ["alert", "flush"]]
    assert [s.used for s in h.steps] == [350, 750, 530]
    assert [s.cache_ratio for s in h.steps] == [0.0, 0.75, None]
    line = describe(h)
    assert "3 LLM calls, peak 750 tokens at step 2 (75% of the budget)" in line
    assert "flushes at steps 3" in line and "1 page faults, 1 prefetches" in line
    assert "prompt cache 38% of the prompt on average (2 calls reported it)" in line


def test_the_svg_draws_regions_levels_marks_and_the_cache_line():
    h = build([context(200), llm(400, 100), {"e": "alert"}, {"e": "flush"}, context(300, summary=50), llm(500, 400)])
    svg = render_history_svg(h)
    parsed = _Elements()
    parsed.feed(svg)
    classes = [a.get("class") for _, a in parsed.tags]
    for region in ("system", "core", "queue", "summary"):
        assert f"area r-{region}" in classes
    assert "area r-workset" not in classes  # nothing to draw for an empty region
    assert classes.count("mark mark-flush") == 1 and classes.count("mark mark-alert") == 1
    assert "cache" in classes and "level wm-warn" in classes and "level wm-flush" in classes
    assert classes.count("step") == 2 and "history-no-cache" not in svg


def test_without_cache_figures_it_says_so_and_without_steps_it_draws_nothing():
    svg = render_history_svg(build([context(10), llm(20)]))
    assert 'class="cache"' not in svg and "did not say" in svg
    assert 'id="history-empty"' in render_history_svg(build([{"e": "create"}, {"e": "user", "time": 1}]))
    assert describe(build([])) == "no LLM calls recorded in the trace"


def test_a_long_history_stays_a_bounded_picture():
    events = []
    for n in range(3 * MAX_COLUMNS):
        events += [context(n % 700), llm(800, 400)]
        if n % 500 == 499:
            events.append({"e": "flush"})
    svg = render_history_svg(build(events))
    assert svg.count('class="step"') == 0 < MAX_COLUMNS + 1 - MAX_TOOLTIPS  # no per-column tooltip past the cap
    assert len(re.findall(r" L", svg)) <= 2 * 5 * 2 * MAX_COLUMNS + 10  # stairs of at most MAX_COLUMNS columns
    assert svg.count('class="mark mark-flush"') == 7  # every flush still marked
    assert len(svg) < 2_000_000


@pytest.fixture(scope="module")
def cached_agent_page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The inspector's page of an agent whose LLM server reported cached prompt tokens."""
    base = tmp_path_factory.mktemp("history")
    calls = {"n": 0}

    def respond(messages: list[dict], tools: list[dict]) -> Completion:
        if not tools:
            return Completion(text="a summary")
        calls["n"] += 1
        n = calls["n"]
        prompt = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 1700  # about what a server counts
        usage = Usage(prompt, 10, prompt - 60)
        last = [m for m in messages if m["role"] != "system"][-1]  # the working set may come after the queue
        if last["role"] == "user":
            return Completion(tool_calls=[ToolCall(f"s{n}", "archival_memory_search",
                                                   {"query": "words", "request_heartbeat": True})], usage=usage)
        return Completion(tool_calls=[ToolCall(f"m{n}", "send_message", {"message": "ok"})], usage=usage)

    agent = Agent.create(base / "agent", system="You are terse.", blocks={"human": "Ana"},
                         driver=ScriptedDriver(respond), config=MemoryConfig(window=3584, reserve_output=256))
    for n in range(8):
        agent.step(f"message {n}: " + "some words " * 60)
    agent.close()
    out = base / "agent.html"
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "inspect", str(base / "agent"), "--html", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "history: 16 LLM calls" in p.stdout and "flushes at steps" in p.stdout and "8 page faults" in p.stdout
    return out


def test_the_history_renders_in_chromium(cached_agent_page, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")
    dom, log = _render(chromium, cached_agent_page, tmp_path)
    assert ":CONSOLE" not in log
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert "data-js-errors" not in root and 'data-ready="yes"' in root
    assert '<svg id="history-chart"' in dom
    assert len(re.findall(r'<rect class="step"', dom)) == 16
    assert len(re.findall(r'<path class="area r-queue"', dom)) == 1
    assert len(re.findall(r'<circle class="mark mark-fault"', dom)) == 8  # one search call per message
    assert '<polyline class="cache"' in dom and "prompt-cache ratio (right axis)" in dom
    assert len(re.findall(r'<line class="mark mark-flush"', dom)) >= 1 and "16 LLM calls" in dom
