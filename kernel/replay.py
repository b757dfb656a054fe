"""Replay: rebuild an agent from its trace, answered by the recorded completions.

The same user messages at the same times, the same step rules, the recorded driver
exchanges (errors included) in order, each request verified against its recorded digest,
the consolidation runs' recorded effects between the same steps:
the replayed memory's digest equals the original's, or a kernel bug is made reproducible.
"""

from __future__ import annotations

import datetime as _dt
import os
from typing import Any

from vmem.kernel.agent import Agent
from vmem.kernel.config import MemoryConfig
from vmem.kernel.consolidation import replay_run
from vmem.kernel.context import context_digest
from vmem.kernel.drivers import ReplayDriver
from vmem.kernel.rules import StepRules
from vmem.kernel.trace import read_trace
from vmem.storage import Store

__all__ = ["replay"]


def replay(source: Store | str | os.PathLike[str], into: str | os.PathLike[str], **create_args: Any) -> Agent:
    """Rebuild the agent recorded in ``source`` (an agent's directory, or its open store) in the
    new directory ``into``; returns it open (close it). ``create_args`` go to
    :meth:`Agent.create` (e.g. ``functions`` the original had, or ``embedder``)."""
    events = list(read_trace(source))
    if not events or events[0].get("e") != "create":
        raise ValueError(f"{source} holds no trace that starts with an agent's creation")
    create = events[0]
    exchanges = [{k: v for k, v in e.items() if k not in ("e", "purpose")} for e in events if e["e"] == "llm"]
    times = iter([_dt.datetime.fromtimestamp(e["time"], _dt.timezone.utc)
                  for e in events if e["e"] in ("create", "user")])
    blocks = {label: {"value": value, "limit": limit, "description": desc, "read_only": ro}
              for label, value, limit, desc, ro in create["blocks"]}
    agent = Agent.create(into, system=create["system"], blocks=blocks,
                         instructions=create.get("instructions") or None,  # a trace from before them: none
                         driver=ReplayDriver(exchanges, digest=context_digest),
                         config=MemoryConfig.from_dict(create["config"]), clock=lambda: next(times), **create_args)
    for event in events[1:]:
        if event["e"] == "rules":
            agent.rules = StepRules.from_dict(event["rules"])
        elif event["e"] == "user":
            agent.step(event["text"], prefetch_for=event.get("prefetch_for"))
        elif event["e"] == "consolidate":  # a consolidation run: its checked ops, applied again
            replay_run(agent.memory, event)
    return agent
