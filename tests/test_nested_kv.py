"""The nested key-value task (MemGPT's multi-hop lookup) run through the whole kernel.

140 generated UUID pairs are stored in archival memory; the scripted lookup
policy (nested_kv_task.KVLookupPolicy) follows the chain by reading only the
compiled context, one archival search (a page fault) per lookup plus the final
miss. No network, no shared data: the official data is the bench's
(bench/nested_kv.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from vmem.kernel import Agent, MemoryConfig, StepResult, StepRules
from vmem.kernel.drivers import Completion, ScriptedDriver
from nested_kv_task import (
    PAIR_TEMPLATE,
    SYSTEM_PROMPT,
    KVLookupPolicy,
    NestedKVTask,
    follow,
    generate_pairs,
    generate_task,
    make_task,
    nest,
)

SEARCH = "archival_memory_search"


def run_task(path: Path, task: NestedKVTask, config: MemoryConfig,
             policy: Callable[[list, list], Completion] | None = None) -> tuple[StepResult, ScriptedDriver]:
    """Store the task's pairs in a new agent's archival memory and ask its question."""
    driver = ScriptedDriver(policy or KVLookupPolicy())
    with Agent.create(path, system=SYSTEM_PROMPT, driver=driver, config=config, rules=StepRules(max_steps=16),
                      durability="normal") as agent:
        agent.memory.archival_insert_many(task.passages)
        result = agent.step(task.question)
        agent.memory.check()
    return result, driver


def search_queries(result: StepResult) -> list[str]:
    return [c.arguments["query"] for c in result.calls if c.name == SEARCH]


def chain_keys(task: NestedKVTask) -> list[str]:
    """The keys the protocol must look up, in order, then the final value (the miss)."""
    return [task.pairs[i][0] for i in task.chain] + [task.answer]


# ---------------------------------------------------------------- the task itself


def test_generated_pairs_are_seeded_distinct_uuid4s():
    pairs = generate_pairs(140, seed=3)
    assert pairs == generate_pairs(140, seed=3) != generate_pairs(140, seed=4)
    flat = [u for pair in pairs for u in pair]
    assert len(pairs) == 140 and len(set(flat)) == 280
    assert all(len(u) == 36 and u[14] == "4" for u in flat)


def test_nest_is_the_memgpt_construction_and_follow_its_ground_truth():
    pairs = [("k0", "v0"), ("k1", "v1"), ("k2", "v2"), ("k3", "v3")]
    nested = nest(pairs, [2, 0, 3])
    assert nested == [("k0", "k3"), ("k1", "v1"), ("k2", "k0"), ("k3", "v3")]
    assert pairs[2] == ("k2", "v2")  # a copy: the input is untouched
    assert follow(nested, "k2") == ("v3", 3)
    assert follow(nested, "k1") == ("v1", 1)
    with pytest.raises(ValueError, match="distinct"):
        nest(pairs, [1, 2, 1])
    with pytest.raises(ValueError, match="out of range"):
        nest(pairs, [0, 4])
    with pytest.raises(ValueError, match="cycle"):
        follow([("a", "b"), ("b", "a")], "a")


@pytest.mark.parametrize("levels", range(1, 7))
def test_generated_task_has_a_chain_of_the_asked_length(levels):
    task = generate_task(levels, seed=11)
    assert task.levels == levels and len(task.pairs) == 140
    assert follow(task.pairs, task.key) == (task.answer, levels)
    assert task.key in task.question and task.answer not in task.question
    assert task.passages[task.chain[0]] == PAIR_TEMPLATE.format(key=task.key, value=task.pairs[task.chain[0]][1])
    assert make_task(task.pairs, task.chain).answer == task.answer  # nesting twice changes nothing


# ---------------------------------------------------------------- through the kernel


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("levels", range(1, 7))
def test_agent_follows_chains_of_1_to_6_lookups(tmp_path, levels, seed):
    task = generate_task(levels, seed)
    result, _ = run_task(tmp_path / "agent", task, MemoryConfig(window=8192))
    assert result.replies == [task.answer]
    assert result.stopped == "done" and result.flushes == 0
    # one page fault per lookup, plus the miss that shows the final value is not a key
    assert search_queries(result) == chain_keys(task)
    assert len(search_queries(result)) == levels + 1
    assert all(c.ok for c in result.calls)


@pytest.mark.parametrize("seed", [0, 1])
def test_chain_survives_flushes_in_a_small_window(tmp_path, seed):
    # 5,120 tokens, about a third of them tool schemas: each lookup adds ~470 queue tokens, so
    # the queue is flushed (evicted behind a summary) in the middle of a 6-lookup chain
    task = generate_task(6, seed)
    config = MemoryConfig(window=5120, reserve_output=512)
    result, driver = run_task(tmp_path / "agent", task, config)
    assert result.flushes >= 1
    assert any(not r.tools for r in driver.requests)  # the summarizer was called
    assert result.replies == [task.answer]
    assert search_queries(result) == chain_keys(task)


def test_chain_survives_a_flush_whose_half_queue_target_is_out_of_reach(tmp_path):
    task = generate_task(6, seed=1)
    config = MemoryConfig(window=4096, reserve_output=512)
    result, _ = run_task(tmp_path / "agent", task, config)
    assert result.flushes >= 1
    assert result.replies == [task.answer]


def test_policy_decides_from_the_context_alone(tmp_path):
    """Each recorded request, given to a fresh policy, gets the same calls: the policy keeps
    no state between requests (only a counter that numbers its tool-call ids)."""
    policy = KVLookupPolicy()
    answers: list[Completion] = []

    def recording(messages: list, tools: list) -> Completion:
        answers.append(policy(messages, tools))
        return answers[-1]

    task = generate_task(4, seed=5)
    config = MemoryConfig(window=5120, reserve_output=512)
    result, driver = run_task(tmp_path / "agent", task, config, recording)
    assert result.replies == [task.answer]
    assert len(answers) == len(driver.requests)
    for request, answer in zip(driver.requests, answers):
        fresh = KVLookupPolicy()(request.messages, request.tools)
        assert fresh.text == answer.text
        assert [(c.name, c.arguments) for c in fresh.tool_calls] == [(c.name, c.arguments) for c in answer.tool_calls]


def test_policy_answers_the_value_when_the_key_is_not_found():
    question = generate_task(1, seed=0).question
    key = generate_task(1, seed=0).key
    policy = KVLookupPolicy()
    first = policy([{"role": "user", "content": question}], [{"type": "function"}])
    assert [(c.name, c.arguments) for c in first.tool_calls] == [(SEARCH, {"query": key, "request_heartbeat": True})]
    miss = json.dumps({"status": "OK", "message": "no results in archival memory (page 1 of 1, 0 matches)"})
    context = [{"role": "user", "content": question}, first.to_message(),
               {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": miss},
               {"role": "system", "content": "Memory pressure: ..."}]
    answer = policy(context, [{"type": "function"}])
    assert [(c.name, c.arguments) for c in answer.tool_calls] == [("send_message", {"message": key})]


def test_summaries_are_deterministic_and_fold_the_previous_count():
    policy = KVLookupPolicy()
    request = [{"role": "system", "content": "prompt"},
               {"role": "user", "content": "Previous summary:\nThe agent has made 3 archival searches so far.\n\n"
                                           "Messages to fold in:\nassistant: [calls archival_memory_search({})]\n"
                                           "tool: ...\nassistant: [calls archival_memory_search({})]"}]
    first = policy(request, [])
    assert first.text == policy(request, []).text
    assert first.text.startswith("The agent has made 5 archival searches") and not first.tool_calls
    assert policy.summaries == 2 and policy.steps == 0
