"""The fair Python baseline of bench_kernel.py: the same agent step without the C core.

Interface::

    from python_kernel import PythonKernel, naive_scene, run_naive_steps, run_naive_flush
    kernel = naive_scene(saved_scene, tmp / "naive", durability="normal")
    seconds_per_step = run_naive_steps(kernel, steps=300, seed=7)
    seconds = run_naive_flush(kernel)

See :class:`PythonKernel` for what it does and does not do, and so what the ratio measures.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

from vmem.kernel import Memory
from vmem.kernel.builtins import BUILTINS
from vmem.kernel.drivers import Completion
from vmem.kernel.functions import FunctionError, check_arguments
from vmem.kernel.pressure import ALERT
from vmem.kernel.summary import SUMMARIZER_PROMPT
from vmem.kernel.tokens import MESSAGE_OVERHEAD
from workload import (
    CONFIG,
    HUMAN_LIMIT,
    PERSONA,
    Responder,
    step_completions,
    user_messages,
)

from vmem import estimate_tokens
from vmem.storage import MemoryDir

# --------------------------------------------------------------------------- the baseline: a pure-Python kernel


class PythonKernel:
    """The same step, written as a competent Python programmer would without the C core.

    The fair competitor: each message's tokens are counted once, when it is appended, with
    the same estimator (vmem.estimate_tokens), and the context's total is kept as messages
    come and go, so the pressure check is O(1); eviction planning is a linear scan from the
    oldest message that stops as soon as enough is freed, keeping a tool call with its
    results; the compiled context is a list copy of chat dicts made once per message. It
    writes what the kernel writes in one transaction per step: recall rows, its state and
    one trace event per LLM exchange and memory call. It runs the same built-in memory
    functions, through the Host interface they are written against (vmem.kernel.host).

    What it does not do is what the C core and the kernel add: transactional rollback of
    the in-memory state, numbered invariants, a working set with admission, journaled
    core state. So the ratio (kernel / this) is the price, or the gain, of those.
    """

    def __init__(self, path: Path, context: list[dict[str, Any]], tools: list[dict[str, Any]],
                 durability: str) -> None:
        self.store = MemoryDir.open(path, durability=durability)
        self.config = CONFIG
        self.tools = tools
        self.tools_tokens = count_tokens(json.dumps(tools))
        self.functions = {f.name: f for f in BUILTINS}
        self.system = context[0]["content"]
        self.summary = ""
        self.now = _dt.datetime.now(_dt.timezone.utc)
        self.replies: list[str] = []
        self.store.blocks.create("persona", PERSONA, limit=2000)
        self.store.blocks.create("human", "", limit=HUMAN_LIMIT)
        self.blocks = {b.label: b.value for b in self.store.blocks.all()}
        queue = [m for m in context[1:] if m["role"] != "system"]
        ids = self.store.recall.append_many(
            [{"role": m["role"], "content": m.get("content") or "", "timestamp": self.now,
              "meta": {k: v for k, v in m.items() if k in ("tool_calls", "tool_call_id")}} for m in queue])
        # the queue: (page, chat dict, tokens, group), oldest first; the running total beside it
        self.queue: list[tuple[int, dict[str, Any], int, int]] = [
            (p, m, count_tokens(_text(m)), 0) for p, m in zip(ids, queue)]
        self.queue_tokens = sum(t for _, _, t, _ in self.queue)
        self.fixed_tokens = count_tokens(self.system) + self._core_tokens() + 40  # + statistics
        self.group = 0
        self.budget = CONFIG.window - CONFIG.reserve_output - self.tools_tokens
        self.alerted = False
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        self.store.close()

    def _core_tokens(self) -> int:
        return count_tokens("\n".join(f"<{k}>\n{v}\n</{k}>" for k, v in self.blocks.items()))

    # -- the Host interface (what the memory functions call)

    @property
    def page_size(self) -> int:
        return self.config.page_size

    def block(self, label: str) -> Any:
        return self.store.blocks.get(label)

    def block_labels(self) -> list[str]:
        return list(self.blocks)

    def set_block(self, label: str, value: str) -> Any:
        block = self.store.blocks.set(label, value)
        self.blocks[label] = value
        self.fixed_tokens = count_tokens(self.system) + self._core_tokens() + 40
        return block

    def reply(self, message: str) -> None:
        self.replies.append(message)

    def archival_insert(self, content: str, tags: Sequence[str]) -> list[int]:
        return self.store.archival.insert(content, tags=tags, timestamp=self.now)

    def archival_search(self, query: str, **kw: Any) -> Any:
        return self.store.archival.search(query, mode="hybrid", page_size=self.page_size, **kw)

    def conversation_search(self, query: str | None, **kw: Any) -> Any:
        return self.store.recall.search(query, page_size=self.page_size, **kw)

    def page_in(self, hits: Sequence[tuple[int, float, str]]) -> set[int]:
        return set()

    # -- the step

    def _append(self, role: str, content: str, meta: dict[str, Any] | None = None, group: int = 0) -> None:
        page = self.store.recall.append(role, content, timestamp=self.now, meta=meta)
        msg: dict[str, Any] = {"role": role, "content": content}
        if meta and "tool_calls" in meta:
            msg["tool_calls"] = meta["tool_calls"]
        if meta and "tool_call_id" in meta:
            msg["tool_call_id"] = meta["tool_call_id"]
        tokens = count_tokens(_text(msg))
        self.queue.append((page, msg, tokens, group))
        self.queue_tokens += tokens

    def compile(self) -> list[dict[str, Any]]:
        core = "\n".join(f"<{k}>\n{v}\n</{k}>" for k, v in self.blocks.items())
        parts = [{"role": "system", "content": self.system},
                 {"role": "system", "content": f"<core_memory>\n{core}\n</core_memory>"}]
        if self.summary:
            parts.append({"role": "system", "content": f"<summary>\n{self.summary}\n</summary>"})
        parts.extend(m for _, m, _, _ in self.queue)
        parts.append({"role": "system", "content": f"<memory_statistics>\n{self.now.isoformat()}\n</memory_statistics>"})
        return parts

    def plan_eviction(self, need: int) -> int:
        """How many of the oldest queue messages to evict to free ``need`` tokens: a linear scan
        that stops when enough is freed, never splitting a group, never the last keep_last."""
        freed, k, limit = 0, 0, len(self.queue) - self.config.keep_last
        while k < limit and freed < need:
            group = self.queue[k][3]
            end = k + 1
            while group and end < len(self.queue) and self.queue[end][3] == group:
                end += 1
            if end > limit:
                break
            freed += sum(t for _, _, t, _ in self.queue[k:end])
            k = end
        return k

    def used(self) -> int:
        return self.fixed_tokens + self.queue_tokens

    def step(self, user_text: str, completion: Completion) -> list[str]:
        self.replies = []
        with self.store.transaction():
            self._append("user", user_text)
            used = self.used()
            if used > self.config.warn * self.budget and not self.alerted:
                self.alerted = True
                self._append("system", ALERT.format(pct=100 * used / self.budget))
            if self.used() > self.config.flush * self.budget:
                self.flush(self.used() - self.budget)
            self.compile()  # what goes to the LLM (the call itself is not timed)
            self.events.append({"e": "llm", "completion": completion.to_dict()})
            self._record(completion)
            self.save()

    def flush(self, need: int, summary: str = Responder.SUMMARY) -> int:
        """Evict at least ``need`` tokens and half the queue, fold them into the summary."""
        n = self.plan_eviction(max(need, self.queue_tokens - int(self.config.target * self.queue_tokens)))
        transcript = [f"{m['role']}: {m.get('content') or ''}" for _, m, _, _ in self.queue[:n]]
        room = self.budget - count_tokens(SUMMARIZER_PROMPT)
        used = 0
        for line in transcript:  # chunking the summarizer's input
            used += count_tokens(line)
            if used > room:
                used = 0
        self.summary = summary
        self.queue_tokens -= sum(t for _, _, t, _ in self.queue[:n])
        del self.queue[:n]
        self.alerted = False
        return n

    def _record(self, completion: Completion) -> None:
        self.group += 1
        calls = completion.tool_calls
        self._append("assistant", completion.text or "", {"tool_calls": [c.to_openai() for c in calls]}, self.group)
        for call in calls:
            func = self.functions.get(call.name)
            try:
                if func is None:
                    raise FunctionError(f"no function {call.name!r}")
                kwargs = check_arguments(func, call.arguments or {})
                value = func.fn(self, **kwargs) if func.wants_memory else func.fn(**kwargs)
                text = json.dumps({"status": "OK", "message": value}, ensure_ascii=False, default=str)
            except (FunctionError, ValueError, KeyError, TypeError) as exc:
                text = json.dumps({"status": "Failed", "message": str(exc)}, ensure_ascii=False)
            self.events.append({"e": "call", "name": call.name, "arguments": call.arguments})
            self._append("tool", text, {"tool_call_id": call.id}, self.group)

    def save(self) -> None:
        self.store.state["python_kernel"] = {"queue": [p for p, _, _, _ in self.queue], "summary": self.summary,
                                             "group": self.group, "alerted": self.alerted}
        self.store.events.extend(self.events)
        self.events.clear()


def _text(m: dict[str, Any]) -> str:
    return (m.get("content") or "") + (json.dumps(m["tool_calls"]) if m.get("tool_calls") else "")


def count_tokens(text: str) -> int:
    """A message's tokens: the same estimator the kernel uses, plus the chat overhead."""
    return estimate_tokens(text) + MESSAGE_OVERHEAD


def naive_scene(scene: Path, into: Path, durability: str) -> PythonKernel:
    """A PythonKernel holding the same context (system, queue) as the saved scene."""
    memory = Memory.open(scene, read_only=True)
    try:
        context, tools = list(memory.compile()), memory.tools
    finally:
        memory.close()
    if into.exists():
        shutil.rmtree(into)
    return PythonKernel(into, context, tools, durability)


def run_naive_steps(kernel: PythonKernel, steps: int, seed: int) -> list[float]:
    completions = step_completions(steps, seed)
    texts = user_messages(steps, seed + 1000)
    out = []
    for text, completion in zip(texts, completions):
        t = time.perf_counter()
        kernel.step(text, completion)
        out.append(time.perf_counter() - t)
    return out


def run_naive_flush(kernel: PythonKernel) -> float:
    """One flush of half the queue: linear plan, transcript, removal, save."""
    t = time.perf_counter()
    with kernel.store.transaction():
        kernel.flush(0)
        kernel.save()
    return time.perf_counter() - t
