"""What the trace records for the inspector's history: the context per LLM call, cached prompt tokens."""

from __future__ import annotations

from fake_openai_server import FakeOpenAIServer, Reply

from vmem import Region
from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, OpenAIDriver, ScriptedDriver, ToolCall, Usage


def test_each_llm_call_records_the_tokens_of_every_region(tmp_path):
    agent = Agent.create(tmp_path / "a", system="You are terse.", blocks={"human": "Ana"},
                         driver=ScriptedDriver([Completion(tool_calls=[ToolCall("c1", "send_message",
                                                                                {"message": "hi"})])]),
                         config=MemoryConfig(window=4096))
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
