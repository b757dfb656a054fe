"""Scripted policies and checks shared by the kernel tests."""

from __future__ import annotations

import re
from typing import Any

from vmem.kernel import Agent, Memory
from vmem.kernel.drivers import Completion, ToolCall, Usage


def call(name: str, heartbeat: bool = False, cid: str | None = None, **arguments: Any) -> ToolCall:
    arguments = {**arguments, "request_heartbeat": heartbeat} if heartbeat else arguments
    return ToolCall(cid or f"call-{name}-{abs(hash(str(arguments))) % 10**8}", name, arguments)


def last_message(messages: list[dict]) -> dict:
    """The newest message of the conversation (the statistics and working set come after it)."""
    volatile = ("<memory_statistics>", "<working_set")
    return next((m for m in reversed(messages) if not (m["role"] == "system" and str(m.get("content") or "")
                                                       .startswith(volatile))), messages[-1])


class ChattyPolicy:
    """A scripted policy for long conversations: answers every user message with send_message,
    saves every 3rd one to archival memory first (a chained call), and folds summaries so that
    each summary names the one it folded (to check the chain is recursive)."""

    def __init__(self, usage_factor: float | None = None) -> None:
        self.on_step = None  # called before answering each step request (to check the agent)
        self.summaries: list[str] = []
        self.summary_requests: list[str] = []
        self.usage_factor = usage_factor
        self.turn = 0

    def __call__(self, messages: list[dict], tools: list[dict]) -> Completion:
        if not tools:  # a summary request from the queue manager
            request = messages[-1]["content"]
            self.summary_requests.append(request)
            previous = re.search(r"Previous summary:\n(.*?)\n\nMessages to fold in:", request, re.S).group(1)
            n = len(self.summaries) + 1
            folded = len(request.splitlines())
            summary = f"summary-{n} folds [{previous[:40]}] and {folded} lines"
            self.summaries.append(summary)
            return Completion(text=summary)
        if self.on_step:
            self.on_step()
        last = last_message(messages)
        usage = None
        if self.usage_factor:
            usage = Usage(int(sum(len(str(m.get("content") or "")) for m in messages) / 4 * self.usage_factor), 5)
        if last["role"] == "user":
            self.turn += 1
            if self.turn % 3 == 0:
                return Completion(tool_calls=[call("archival_memory_insert", heartbeat=True, cid=f"a{self.turn}",
                                                   content=f"note {self.turn}: {last['content'][:60]}")], usage=usage)
            return Completion(tool_calls=[call("send_message", cid=f"s{self.turn}", message=f"ok {self.turn}")],
                              usage=usage)
        return Completion(tool_calls=[call("send_message", cid=f"t{self.turn}", message=f"saved {self.turn}")],
                          usage=usage)


def check_agent(agent: Agent | Memory) -> None:
    """The invariants every step must keep: Memory.check(), and no call awaiting its result."""
    memory = agent.memory if isinstance(agent, Agent) else agent
    memory.check()
    assert not memory.pending_calls, f"tool calls {memory.pending_calls} have no result after the step"
