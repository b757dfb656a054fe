"""One consolidation run with a real small model (SmolLM2-135M behind llama.cpp, tests/llm_server.py),
end to end through OpenAIDriver: whatever the model answers, the run commits what passes the checks
(or skips cleanly), the cursor moves, the trace records it and Memory.check() passes. The model's
wisdom is not asserted; the plumbing is."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from vmem.kernel import Memory, consolidate, read_trace
from vmem.kernel.drivers import OpenAIDriver

pytestmark = pytest.mark.llm

TURNS = [("Hi! I'm Ana. I live in Porto and I work as a nurse at the children's hospital.", "Nice to meet you, Ana!"),
         ("My cat Pixel sleeps on my keyboard. We handle 60 calls a day at work.", "Pixel sounds lovely."),
         ("Update: we now handle 1,200 calls a day, the hospital merged with another.", "That is a big change.")]


def test_one_run_with_a_real_small_model(llm_server, tmp_path: Path) -> None:
    driver = OpenAIDriver(llm_server.model, base_url=llm_server.base_url, api_key=llm_server.api_key,
                          timeout=600, params={"max_tokens": 200, "temperature": 0})
    clock = iter(dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc) + dt.timedelta(hours=h) for h in range(100))
    memory = Memory.create(tmp_path / "a", system="You are Ana's assistant.", clock=lambda: next(clock),
                           blocks={"human": {"value": "", "limit": 1000}, "persona": "I am Vee."})
    memory.archival_insert("calls per day: 60", valid_from=dt.datetime(2024, 4, 1, tzinfo=dt.timezone.utc))
    for user, reply in TURNS:
        memory.append({"role": "user", "content": user})
        memory.append({"role": "assistant", "content": reply})
    report = consolidate(memory, driver, checks=2)
    assert report is not None and report.end == memory.consolidation_cursor == 6
    assert report.applied + report.skipped_total == report.proposed or report.error is not None
    assert len(report.ops) == report.applied
    event = [e for e in read_trace(memory.store) if e["e"] == "consolidate"][-1]
    assert event["answers"] and event["applied"] == report.applied  # the model's answer is in the trace
    memory.check()
    driver.close()
    memory.close()
