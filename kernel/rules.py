"""StepRules: when the chain of LLM calls for one user message ends (in the spirit of Letta's
tool rules), and the guards against models that loop.

- A reply without tool calls ends the turn.
- A terminal tool (``send_message``: the model has answered the user) ends the turn, even
  when it asks for a heartbeat, unless there is a reason to continue: another call of the
  same answer asked for a heartbeat or failed, or the terminal call itself failed (the user
  saw nothing, so the model may try again).
- Any other call chains another step when it asks for a heartbeat or fails.
- A call identical to one made earlier in the turn (same function, same arguments) is not
  run: it is answered with a function error, and the turn ends (small models repeat
  themselves; the repeat would be answered the same way anyway).
- A tool called more than ``max_calls_per_tool`` times in one turn is refused the same way.
- One answer runs at most ``max_calls_per_answer`` calls (and never more than the memory's
  ``MemoryConfig.max_calls``, nor than fit in half its queue's room at about 96 tokens each): the answer is recorded with the calls that run, the others are
  refused in a note after their results, and the turn ends (a model looping inside one answer
  could otherwise fill the window with one atomic group no flush may split).
- ``max_steps`` LLM calls per user message are the last resort.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from vmem.kernel.drivers import ToolCall
from vmem.kernel.functions import HEARTBEAT

__all__ = ["StepRules", "TurnGuard"]


@dataclass(frozen=True)
class StepRules:
    """The step loop's rules (an Agent's; the trace records them, the memory does not keep them)."""

    max_steps: int = 8  #: LLM calls per user message, at most (the last resort)
    terminal: frozenset[str] = frozenset({"send_message"})  #: tools whose call ends the turn
    max_calls_per_tool: int = 0  #: calls of one tool in one turn before it is refused (0: no cap but max_steps)
    refuse_repeats: bool = True  #: refuse a call identical to an earlier one of the same turn
    max_calls_per_answer: int = 8  #: tool calls of one answer that run; the rest are refused

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.max_calls_per_answer < 1:
            raise ValueError(f"max_calls_per_answer must be >= 1, got {self.max_calls_per_answer}")
        if self.max_calls_per_tool < 0:
            raise ValueError(f"max_calls_per_tool must be >= 0, got {self.max_calls_per_tool}")
        object.__setattr__(self, "terminal", frozenset(self.terminal))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (what the trace records)."""
        d = asdict(self)
        d["terminal"] = sorted(self.terminal)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StepRules":
        """Inverse of :meth:`to_dict`; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        given: dict[str, Any] = {k: (frozenset(v) if k == "terminal" else v) for k, v in d.items() if k in known}
        return cls(**given)


@dataclass
class TurnGuard:
    """What one turn has called so far, against the rules."""

    rules: StepRules
    seen: set[tuple[str, str]] = field(default_factory=set)
    per_tool: Counter[str] = field(default_factory=Counter)

    def refusal(self, call: ToolCall) -> str | None:
        """Why ``call`` must not run (then the turn ends), or None; records it."""
        key = (call.name, _arguments_key(call))
        self.per_tool[call.name] += 1
        if self.rules.refuse_repeats and key in self.seen:
            return (f"refused: this call repeats an earlier call of this turn with the same arguments "
                    f"(its result is above); answer the user instead")
        self.seen.add(key)
        cap = self.rules.max_calls_per_tool
        if cap and self.per_tool[call.name] > cap:
            return f"refused: {call.name} was called {cap} times this turn already; answer the user instead"
        return None

    def chains(self, call: ToolCall, ok: bool, heartbeat: bool) -> bool:
        """Whether this call (run, with this outcome) is a reason to chain another step."""
        if call.name in self.rules.terminal:
            return not ok
        return heartbeat or not ok


def _arguments_key(call: ToolCall) -> str:
    if call.arguments is None:
        return f"unparsed:{call.raw_arguments}"
    args = {k: v for k, v in call.arguments.items() if k != HEARTBEAT}
    return json.dumps(args, sort_keys=True, default=repr)
