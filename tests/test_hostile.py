"""Hostile model output, end to end: a state machine answers the agent with random completions
(garbage text, truncated or malformed JSON, unknown functions, wrong types, huge arguments,
repeated identical calls, repeated or missing call ids, empty answers) and checks the memory's
invariants after every step (tests/conftest.py) and that nothing but a function error comes of it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall
from vmem.kernel.drivers.lenient_json import parse_arguments

NAMES = st.sampled_from(["send_message", "core_memory_append", "core_memory_replace", "memory_insert",
                         "memory_rethink", "archival_memory_insert", "archival_memory_search",
                         "conversation_search", "teleport", "", "send_message "])
LABELS = st.sampled_from(["human", "persona", "nope", "", "human\n"])
JUNK = st.one_of(st.none(), st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True),
                 st.text(max_size=40), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                                            st.integers(), max_size=3))
HUGE = st.integers(2_000, 40_000).map(lambda n: "blah " * n)
TEXT = st.one_of(st.text(max_size=80), HUGE, st.just(""), st.just("\x00\ud800 zero"))
ARGS = st.one_of(
    st.fixed_dictionaries({"label": LABELS, "content": TEXT}, optional={"request_heartbeat": JUNK}),
    st.fixed_dictionaries({"message": TEXT}, optional={"request_heartbeat": st.booleans()}),
    st.fixed_dictionaries({"query": TEXT}, optional={"page": JUNK, "tags": JUNK, "start_date": JUNK}),
    st.fixed_dictionaries({"label": LABELS, "old_content": TEXT, "new_content": TEXT}),
    st.dictionaries(st.text(max_size=8), JUNK, max_size=4),
)
RAW = st.one_of(  # the arguments text as a model wrote it, sometimes not JSON at all
    ARGS.map(lambda a: json.dumps(a)),
    ARGS.map(lambda a: json.dumps(a)[: max(1, len(json.dumps(a)) // 2)]),  # truncated
    st.sampled_from(["{'label': 'human', 'content': 'single quotes'}", "{label: human}", "[1, 2]", "null",
                     "", "{\"a\": ", "```json\n{\"message\": \"fenced\"}\n```", "{\"message\": \"x\",}"]),
    st.text(max_size=60),
)


@st.composite
def calls(draw) -> ToolCall:
    name = draw(NAMES)
    raw = draw(RAW)
    parsed = parse_arguments(raw)
    cid = draw(st.sampled_from(["dup", "", "call_1", "x" * 200])) if draw(st.booleans()) else f"c{draw(st.integers(0, 10**9))}"
    return ToolCall(cid, name, parsed.arguments, parsed.error, raw_arguments=raw)


COMPLETIONS = st.one_of(
    st.builds(lambda t: Completion(text=t), TEXT),
    st.builds(lambda t: Completion(text=t), st.none()),
    st.builds(lambda cs, t: Completion(text=t, tool_calls=cs), st.lists(calls(), min_size=1, max_size=4),
              st.one_of(st.none(), st.text(max_size=30))),
)


class HostileModel(RuleBasedStateMachine):
    """One agent; every rule is a user message answered by a random chain of completions."""

    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vmem-hostile-"))
        self.script: list[Completion] = []
        self.driver = ScriptedDriver(self._answer)
        self.agent = Agent.create(self.dir / "agent", system="You are under test.", driver=self.driver,
                                  blocks={"human": {"value": "", "limit": 3000}, "persona": "calm"},
                                  config=MemoryConfig(window=4096, reserve_output=256, keep_last=3, prefetch=1))
        self.steps = 0

    def _answer(self, messages, tools) -> Completion:
        if not tools:
            return Completion(text="a summary of what happened")
        if self.script:
            return self.script.pop(0)
        return Completion(tool_calls=[ToolCall(f"end{len(messages)}", "send_message", {"message": "ok"})])

    @rule(chain=st.lists(COMPLETIONS, min_size=1, max_size=4), text=TEXT)
    def user_message(self, chain: list[Completion], text: str) -> None:
        self.script = list(chain)
        result = self.agent.step(text)  # must not raise: bad output is a function error, not a crash
        assert 1 <= result.steps <= self.agent.rules.max_steps
        self.steps += 1

    @rule(call=calls())
    def the_same_call_again_and_again(self, call: ToolCall) -> None:
        self.script = [Completion(tool_calls=[call]) for _ in range(3)]
        self.agent.step("repeat yourself")
        self.steps += 1

    @precondition(lambda self: self.steps and self.steps % 5 == 0)
    @rule()
    def reopen(self) -> None:
        digest = self.agent.memory.digest()
        self.agent.close()
        self.agent = Agent.open(self.dir / "agent", driver=self.driver)
        assert self.agent.memory.digest() == digest

    @invariant()
    def sound(self) -> None:
        if hasattr(self, "agent"):
            self.agent.memory.check()

    def teardown(self) -> None:
        if hasattr(self, "agent"):
            self.agent.close()
            with Memory.open(self.dir / "agent") as memory:  # what is on disk is sound too
                memory.check()
            shutil.rmtree(self.dir, ignore_errors=True)


HostileModel.TestCase.settings = settings(max_examples=int(os.environ.get("VMEM_HOSTILE_EXAMPLES", "25")), stateful_step_count=12, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
test_hostile_model_output = HostileModel.TestCase
