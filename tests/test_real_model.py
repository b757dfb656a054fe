"""The kernel under a real model: SmolLM2-135M behind llama.cpp's OpenAI-compatible server
(bench/llm_server.py), through OpenAIDriver and the real ``openai`` client, in the JSON tool
mode (the model's chat template has no tool calls).

These tests assert the kernel's behaviour, never the model's wisdom: the invariants after
every step (tests/conftest.py), turns that end, flushes folded by the model's own summaries,
a prompt cache that serves most of each request, and no crash whatever the model writes.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vmem.kernel import Agent, MemoryConfig, prefix_cache, read_trace
from vmem.kernel.drivers import OpenAIDriver

pytestmark = pytest.mark.llm

SYSTEM = ("You are Vee, an assistant with a memory. Save what the user tells you about themselves with "
          "core_memory_append. Talk to the user with send_message. Be brief.")
FACTS = ["Hi! I'm Ana. I live in Porto, near the river, and I work as a nurse at the children's hospital.",
         "I have a grey cat called Pixel who sleeps on my keyboard when I try to write emails.",
         "My brother Rui is getting married in June in Braga; I still need to buy a present.",
         "I am learning the cello. My teacher says my bowing is too tense, so I practise slowly.",
         "What is my cat called, and where do I live?",
         "Remind me what I still need to buy for June."]


def test_an_agent_with_a_real_model_over_http(llm_server, tmp_path: Path) -> None:
    driver = OpenAIDriver(llm_server.model, base_url=llm_server.base_url, api_key=llm_server.api_key,
                          tool_mode="json", timeout=600, params={"max_tokens": 48, "temperature": 0})
    window = min(llm_server.n_ctx or 3584, 3584)  # small, so that memory pressure comes within a few messages
    agent = Agent.create(tmp_path / "a", system=SYSTEM, blocks={"human": "", "persona": "I am Vee."},
                         driver=driver, config=MemoryConfig(window=window, reserve_output=256, keep_last=3))
    padding = " Also, for the record: " + "the weather was mild and the tram was late again. " * 36
    results = [agent.step(text + (padding if i < 4 else "")) for i, text in enumerate(FACTS)]
    memory = agent.memory
    assert all(1 <= r.steps <= agent.rules.max_steps for r in results)
    assert all(r.usage and r.usage[-1].prompt_tokens > 0 for r in results)  # the server's usage reaches the kernel
    # memory pressure under a real model: flushes, folded by the model's own summaries
    trace = list(read_trace(tmp_path / "a"))
    flushes = [e for e in trace if e["e"] == "flush"]
    summaries = [e for e in trace if e["e"] == "llm" and e["purpose"] == "summary"]
    assert flushes and summaries and memory.summary
    assert memory.evicted > 0 and memory.conversation_search("Pixel").total >= 1  # evicted, not lost
    # the layout keeps the server's prompt cache warm between flushes
    cache = prefix_cache(trace)
    assert cache.calls >= 2 and cache.ratio >= 0.5, cache
    assert memory.counter.calibration != 1.0  # the provider's counts calibrated the budget
    agent.close()
