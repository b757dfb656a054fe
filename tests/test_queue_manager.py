"""The queue manager over long conversations: watermarks, recursive summaries, nothing lost."""

from __future__ import annotations

import pytest

from vmem import BudgetError

from fake_openai_server import FakeOpenAIServer, Reply
from vmem.kernel import Agent, ContextWindowError, MemoryConfig
from vmem.kernel.drivers import OpenAIDriver, RetryPolicy, ScriptedDriver
from kernel_helpers import ChattyPolicy, check_agent
from vmem import Region, State


@pytest.mark.parametrize("window, usage_factor", [(3584, None), (4096, 1.3), (6144, 0.8)])
def test_long_conversations_cross_the_watermarks_many_times(tmp_path, window, usage_factor):
    policy = ChattyPolicy(usage_factor)
    agent = Agent.create(tmp_path / "a", system="You are a test agent.", blocks={"human": "", "persona": "p"},
                         driver=ScriptedDriver(policy),
                         config=MemoryConfig(window=window, reserve_output=256, keep_last=4))

    def under_the_flush_line() -> None:  # what the LLM is sent always fits
        assert agent.memory.ctx.status().state is not State.OVER

    policy.on_step = under_the_flush_line
    sent = []
    flushes = alerts = 0
    for i in range(120):
        text = f"turn {i}: " + " ".join(f"w{i}x{j}" for j in range(5 + (i * 7) % 40))
        sent.append(text)
        result = agent.step(text)
        flushes += result.flushes
        alerts += result.alerts
        check_agent(agent)
    assert flushes >= 3 and alerts >= flushes  # an alert before every flush episode
    # the summary chain is recursive: each request folds the summary made before it
    for before, request in zip(policy.summaries, policy.summary_requests[1:]):
        assert f"Previous summary:\n{before}\n" in request
    assert agent.memory.summary == policy.summaries[-1]
    # nothing is lost: every user message is still in recall storage, findable by its words
    for i in (0, 1, 57, 119):
        found = agent.memory.store.recall.search(f"w{i}x3", roles=["user"], page_size=3)
        assert sent[i] in [m.content for m in found.items]
    evicted = agent.memory.evicted
    assert evicted > 0 and len(agent.memory.store.recall) >= evicted + agent.memory.ctx.stats().pages[Region.QUEUE]
    if usage_factor:
        assert agent.memory.state.calibration != 1.0  # the provider's usage moved the estimate
    agent.close()


def test_pinned_and_recent_messages_are_never_evicted(tmp_path):
    policy = ChattyPolicy()
    agent = Agent.create(tmp_path / "a", system="s", blocks={}, driver=ScriptedDriver(policy),
                         config=MemoryConfig(window=3584, reserve_output=256, keep_last=6))
    agent.step("the first message, pinned")
    first = int(agent.memory.ctx.pages(Region.QUEUE)[0])
    agent.memory.ctx.pin(first)
    for i in range(60):
        agent.step(f"filler {i} " + "lorem ipsum " * 20)
        queue = agent.memory.ctx.pages(Region.QUEUE).tolist()
        assert first in queue
        assert len(queue) >= 6
    assert agent.memory.state.folds >= 2
    agent.close()


def test_a_protected_tail_too_large_for_the_window_shrinks_instead_of_wedging(tmp_path):
    # keep_last=50 cannot fit in this window: before issue 18 every step raised "cannot make room"
    agent = Agent.create(tmp_path / "a", system="s", blocks={}, driver=ScriptedDriver(ChattyPolicy()),
                         config=MemoryConfig(window=3584, reserve_output=256, keep_last=50))
    for i in range(60):
        agent.step(f"message {i} " + "lorem ipsum " * 15)
    assert agent.memory.evicted > 0 and agent.memory.ctx.config.keep_last == 50
    agent.close()
    Agent.open(tmp_path / "a", driver=ScriptedDriver([])).close()


def test_eviction_that_cannot_get_under_budget_says_so(tmp_path):
    agent = Agent.create(tmp_path / "a", system="s", blocks={}, driver=ScriptedDriver(ChattyPolicy()),
                         config=MemoryConfig(window=3584, reserve_output=256, keep_last=4))
    agent.step("the first message, pinned")
    for page in agent.memory.ctx.pages(Region.QUEUE).tolist():  # pinned through the core, behind the kernel
        agent.memory.ctx.pin(page)
    with pytest.raises(ContextWindowError, match="cannot make room"):
        for i in range(200):
            agent.step(f"message {i} " + "lorem ipsum " * 15)
            for page in agent.memory.ctx.pages(Region.QUEUE).tolist():
                try:
                    agent.memory.ctx.pin(page)
                except BudgetError:  # the core refuses pins beyond the budget
                    break
    agent.memory.ctx.check()
    agent.close()


def test_openai_driver_end_to_end_with_an_overflow_that_triggers_a_flush(tmp_path):
    with FakeOpenAIServer() as server:
        driver = OpenAIDriver(model="test-model", base_url=server.base_url, api_key="k",
                              retry=RetryPolicy(max_attempts=3, base_delay=0.001, max_delay=0.002))
        agent = Agent.create(tmp_path / "a", system="You are a test agent.", blocks={"human": ""}, driver=driver,
                             config=MemoryConfig(window=8192, reserve_output=256))
        server.push(Reply.tool_calls(("core_memory_append",
                                      {"label": "human", "content": "Name: Ana", "request_heartbeat": True})),
                    Reply.rate_limit(retry_after=0),
                    Reply.tool_calls(("send_message", {"message": "Hello Ana"})))
        result = agent.step("Hi, I'm Ana")
        assert result.replies == ["Hello Ana"]
        assert agent.memory.store.blocks.get("human").value == "Name: Ana"
        for i in range(8):  # some history to flush
            server.push(Reply.tool_calls(("send_message", {"message": f"ok {i}"})))
            agent.step(f"message {i}")
        queue_before = agent.memory.ctx.stats().pages[Region.QUEUE]
        server.push(Reply.context_overflow(), Reply.text("Summary: Ana said hi and sent 8 messages."),
                    Reply.tool_calls(("send_message", {"message": "still here"})))
        result = agent.step("one more")
        assert result.flushes == 1 and result.replies == ["still here"]
        assert agent.memory.ctx.stats().pages[Region.QUEUE] < queue_before
        assert "Ana said hi" in agent.memory.summary
        summary_request = server.chat_requests[-2]
        assert not summary_request.tools
        assert "Messages to fold in" in summary_request.messages[-1]["content"]
        assert "message 0" in summary_request.messages[-1]["content"]
        check_agent(agent)
        agent.close()


def test_calibration_learns_the_models_ratio_and_the_fixed_part_of_a_request() -> None:
    from vmem.kernel.tokens import TokenCounter

    counter = TokenCounter()
    for context in range(400, 4000, 150):  # a conversation that grows; the model counts 0.8x + 900
        counter.observe(round(0.8 * context + 900), context, tools=1700)
    assert abs(counter.calibration - 0.8) < 0.01 and abs(counter.fixed - 900) < 10
    assert abs(counter.estimate(5000, 1700) - (0.8 * 5000 + 900)) < 0.01 * 4900
    same = TokenCounter()
    for _ in range(5):  # contexts too alike to tell the parts apart: one ratio, tools included
        same.observe(2000, 1000, tools=1000)
    assert same.fixed is None and same.calibration == 1.0
