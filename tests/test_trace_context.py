"""What the trace records for the inspector's history: the context per LLM call, cached prompt tokens."""

from __future__ import annotations

from fake_openai_server import FakeOpenAIServer, Reply

from vmem import Region
from vmem.kernel import Agent, Memory, MemoryConfig, PrefixCache, prefix_cache
from vmem.kernel.drivers import Completion, OpenAIDriver, ScriptedDriver, ToolCall, Usage


def test_each_llm_call_records_the_tokens_of_every_region(tmp_path):
    agent = Agent.create(tmp_path / "a", system="You are terse.", blocks={"human": "Ana"},
                         driver=ScriptedDriver([Completion(tool_calls=[ToolCall("c1", "send_message",
                                                                                {"message": "hi"})])]),
                         config=MemoryConfig(window=4608))
    agent.step("hello")
    stats = agent.memory.ctx.stats()
    seen = [e for e in agent.memory.store.events if e["e"] == "context"]
    agent.close()
    assert len(seen) == 1
    event = seen[0]
    assert set(event["tokens"]) == {"system", "core", "summary", "queue", "workset"}
    assert event["tokens"]["core"] == stats.tokens[Region.CORE] > 0 and event["tokens"]["queue"] > 0
    assert event["budget"] > sum(event["tokens"].values())


def test_memory_context_records_it_too(tmp_path):
    with Memory.create(tmp_path / "m", system="x", blocks={"human": ""}) as memory:
        memory.append({"role": "user", "content": "hi"})
        memory.context()
        memory.context()
        assert [e["e"] for e in memory.store.events].count("context") == 2


def test_usage_keeps_cached_tokens_when_the_provider_reports_them():
    assert Usage.from_dict(Usage(100, 5, 80).to_dict()) == Usage(100, 5, 80)
    assert Usage(100, 5).to_dict() == {"prompt_tokens": 100, "completion_tokens": 5}  # older traces unchanged
    with FakeOpenAIServer() as server:
        body = Reply.text("ok").body
        body["usage"]["prompt_tokens_details"] = {"cached_tokens": 7}
        server.push(Reply(200, body), Reply.text("again"))
        driver = OpenAIDriver("fake-model", base_url=server.base_url)
        try:
            assert driver.complete([{"role": "user", "content": "hi"}], []).usage == Usage(10, 5, 7)
            assert driver.complete([{"role": "user", "content": "hi"}], []).usage == Usage(10, 5, None)
        finally:
            driver.close()


def _llm(purpose, prompt, cached=None):
    usage = {"prompt_tokens": prompt, "completion_tokens": 1}
    if cached is not None:
        usage["cached_tokens"] = cached
    return {"e": "llm", "purpose": purpose, "completion": {"usage": usage}}


def test_prefix_cache_counts_step_calls_that_follow_a_step_with_no_flush_between():
    events = [
        _llm("step", 100, 0),  # first call: nothing before it
        _llm("step", 120, 90),  # counted
        {"e": "flush"},
        _llm("step", 80, 10),  # after a flush: the prefix was rewritten
        _llm("step", 90, 70),  # counted
        _llm("summary", 50, 0),  # a summary request displaces the server's cache
        _llm("step", 95, 5),
        _llm("step", 100),  # the provider said nothing about its cache
        _llm("step", 110, 100),  # counted
    ]
    tally = prefix_cache(events)
    assert tally == PrefixCache(prompt_tokens=320, cached_tokens=260, calls=3)
    assert tally.ratio == 260 / 320
    assert prefix_cache([_llm("step", 10, 0)]).ratio is None
