"""When a turn ends: terminal tools, refused repeats, a cap per tool, max_steps; configurable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kernel_helpers import call
from vmem.kernel import Agent, MemoryConfig, StepRules
from vmem.kernel.drivers import Completion, ScriptedDriver


def run(tmp_path: Path, script: list, rules: StepRules | None = None):
    agent = Agent.create(tmp_path / "a", system="s", blocks={"human": ""}, driver=ScriptedDriver(script),
                         config=MemoryConfig(window=4608), rules=rules)
    try:
        return agent.step("hello"), agent.driver.remaining
    finally:
        agent.close()


def test_send_message_ends_the_turn_even_with_a_heartbeat(tmp_path: Path) -> None:
    result, left = run(tmp_path, [Completion(tool_calls=[call("send_message", heartbeat=True, message="hi")])] * 8)
    assert result.steps == 1 and result.replies == ["hi"] and result.stopped == "done" and left == 7


def test_send_message_beside_a_call_that_wants_its_result_chains(tmp_path: Path) -> None:
    result, _ = run(tmp_path, [
        Completion(tool_calls=[call("send_message", message="let me look"),
                               call("conversation_search", heartbeat=True, query="tea")]),
        Completion(tool_calls=[call("send_message", message="nothing about tea")]),
    ])
    assert result.steps == 2 and result.replies == ["let me look", "nothing about tea"]


def test_a_failed_send_message_chains_so_the_model_can_retry(tmp_path: Path) -> None:
    result, _ = run(tmp_path, [
        Completion(tool_calls=[call("send_message", text="wrong argument name")]),
        Completion(tool_calls=[call("send_message", message="fixed")]),
    ])
    assert result.steps == 2 and result.replies == ["fixed"] and not result.calls[0].ok


def test_an_identical_call_in_the_same_turn_is_refused_and_ends_it(tmp_path: Path) -> None:
    same = lambda i: Completion(tool_calls=[call("archival_memory_search", heartbeat=True, query="tea",  # noqa: E731
                                                 cid=f"c{i}")])
    result, left = run(tmp_path, [same(i) for i in range(8)])
    assert result.steps == 2 and result.stopped == "repeat" and left == 6
    assert result.calls[0].ok and not result.calls[1].ok
    assert "repeats an earlier call" in json.loads(result.calls[1].result)["message"]


def test_a_tool_called_too_often_in_one_turn_is_refused(tmp_path: Path) -> None:
    script = [Completion(tool_calls=[call("conversation_search", heartbeat=True, query=f"q{i}")]) for i in range(8)]
    result, _ = run(tmp_path, script, StepRules(max_calls_per_tool=3))
    assert result.steps == 4 and result.stopped == "tool_cap"
    assert [c.ok for c in result.calls] == [True, True, True, False]


def test_max_steps_is_the_last_resort(tmp_path: Path) -> None:
    script = [Completion(tool_calls=[call("conversation_search", heartbeat=True, query=f"q{i}")]) for i in range(8)]
    result, _ = run(tmp_path, script, StepRules(max_steps=3, max_calls_per_tool=0))
    assert result.steps == 3 and result.stopped == "max_steps"


def test_the_rules_can_be_turned_off(tmp_path: Path) -> None:
    loose = StepRules(terminal=frozenset(), refuse_repeats=False, max_calls_per_tool=0, max_steps=3)
    result, _ = run(tmp_path, [Completion(tool_calls=[call("send_message", heartbeat=True, message="hi")])] * 3,
                    loose)
    assert result.steps == 3 and result.replies == ["hi"] * 3 and result.stopped == "max_steps"


def test_rules_survive_a_round_trip_and_reject_nonsense() -> None:
    rules = StepRules(max_steps=5, terminal=frozenset({"send_message", "finish"}), max_calls_per_tool=2)
    assert StepRules.from_dict(json.loads(json.dumps(rules.to_dict()))) == rules
    with pytest.raises(ValueError):
        StepRules(max_steps=0)
