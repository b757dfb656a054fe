"""The scripted agent workload the kernel benchmarks share: its prompt, its text, its driver.

A step's completions are precomputed (mostly ``send_message``; every 10th step also
``archival_memory_insert``, another 10th ``core_memory_append``) from a seeded text
generator, and the driver's own time is measured so that it can be subtracted.
bench_kernel.py, bench_pagefault.py, nested_kv.py and python_kernel.py use it.

Interface::

    from workload import CONFIG, RULES, SYSTEM, PERSONA, TimedDriver, Responder, step_completions, user_messages
    driver = TimedDriver(ScriptedDriver(Responder(step_completions(100, seed=1))))
    ... agent.step(text) for text in user_messages(100, seed=2) ...; driver.seconds   # time in the driver
"""

from __future__ import annotations

import random
import time
from typing import Any, Sequence

from vmem.kernel import MemoryConfig, StepRules
from vmem.kernel.drivers import Completion, Driver, ToolCall

CONFIG = MemoryConfig(window=131_072, reserve_output=4_096)
RULES = StepRules(max_steps=4)
SYSTEM = ("You are a helpful assistant with a long memory. Core memory holds what matters about the user; "
          "archival memory holds notes you saved; recall storage holds the whole conversation. Answer with "
          "send_message; save durable facts with core_memory_append or archival_memory_insert.")
PERSONA = "I am a patient, precise assistant. I keep notes on what the user tells me and I use them."
HUMAN_LIMIT = 50_000

# --------------------------------------------------------------------------- generated text

_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kemal", "Lena"]
_VERBS = ["visited", "planned", "cooked", "repaired", "painted", "booked", "studied", "sold", "found", "ordered"]
_THINGS = ["the garden shed", "a trip to Lisbon", "her grandmother's recipe", "the old bicycle", "a pottery class",
           "the quarterly report", "a birthday dinner", "the violin lessons", "a new laptop", "the camping gear",
           "the apartment lease", "a chess tournament", "the marathon training", "a jazz concert"]
_WHEN = ["yesterday", "last week", "on Sunday", "after work", "in May", "before the holidays", "with friends",
         "for the first time", "again", "at night"]


class TextGen:
    """Deterministic, varied English text (user messages, replies, notes, passages)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def sentence(self) -> str:
        r = self.rng
        return (f"{r.choice(_NAMES)} {r.choice(_VERBS)} {r.choice(_THINGS)} {r.choice(_WHEN)} and "
                f"{r.choice(_VERBS)} {r.choice(_THINGS)}.")

    def text(self, sentences: int, tag: int) -> str:
        return " ".join(self.sentence() for _ in range(sentences)) + f" (#{tag})"

# --------------------------------------------------------------------------- drivers and timing


class TimedDriver(Driver):
    """Wraps a driver; :attr:`seconds` accumulates the time spent in its ``complete``."""

    def __init__(self, inner: Driver) -> None:
        self.inner = inner
        self.seconds = 0.0

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> Completion:
        t = time.perf_counter()
        try:
            return self.inner.complete(messages, tools)
        finally:
            self.seconds += time.perf_counter() - t


def step_completions(n: int, seed: int, start: int = 0) -> list[Completion]:
    """``n`` precomputed completions: send_message; every 10th step also archival_memory_insert,
    another 10th core_memory_append (all calls in one completion: one LLM call per step)."""
    gen = TextGen(seed)
    out = []
    for i in range(start, start + n):
        calls = []
        if i % 10 == 3:
            calls.append(ToolCall(f"s{i}-a", "archival_memory_insert", {"content": "Note: " + gen.text(2, i)}))
        elif i % 10 == 7:
            calls.append(ToolCall(f"s{i}-c", "core_memory_append",
                                  {"label": "human", "content": f"Fact {i}: {gen.sentence()}"}))
        calls.append(ToolCall(f"s{i}-m", "send_message", {"message": gen.text(1, i)}))
        out.append(Completion(tool_calls=calls, finish_reason="tool_calls"))
    return out


def user_messages(n: int, seed: int) -> list[str]:
    """``n`` precomputed user messages of one sentence."""
    gen = TextGen(seed)
    return [gen.text(1, i) for i in range(n)]


class Responder:
    """A ScriptedDriver responder over precomputed completions: step requests get the next
    completion (an exception instance is raised by the driver), summary requests (no tools)
    get a fixed summary at once."""

    SUMMARY = "The user and the assistant talked about everyday plans; facts are in core memory."

    def __init__(self, completions: Sequence[Completion | BaseException]) -> None:
        self.completions = list(completions)
        self.next = 0
        self.summaries = 0

    def __call__(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion | BaseException:
        if not tools:
            self.summaries += 1
            return Completion(text=self.SUMMARY, finish_reason="stop")
        item = self.completions[self.next % len(self.completions)]
        self.next += 1
        return item
