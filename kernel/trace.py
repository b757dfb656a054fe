"""The trace: every driver exchange and memory operation, appended as msgpack.

A trace is a stream of msgpack maps in ``<agent dir>/trace.msgpack``, one per
event (``e``: "create", "user", "llm", "call", "pagein", "alert", "flush").
Writes are buffered and flushed when a step ends; a crash can lose at most the
unflushed tail, and a torn last record is ignored when reading.

:func:`replay` rebuilds an agent from its trace with a ReplayDriver: the same
user messages at the same times, answered by the recorded completions. Its
state digest equals the original's; a difference is a kernel bug made
reproducible.
"""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, Iterator

import msgpack

__all__ = ["Trace", "read_trace", "replay"]


class Trace:
    """Append-only msgpack event log."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file = open(self.path, "ab", buffering=1 << 16)
        self._packer = msgpack.Packer(use_bin_type=True)

    def write(self, event: dict[str, Any]) -> None:
        self._file.write(self._packer.pack(event))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()


def read_trace(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The events of a trace, in order; a torn final record is skipped."""
    with open(path, "rb") as f:
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            yield from unpacker
        except (msgpack.OutOfData, ValueError):
            return


def replay(trace_path: str | os.PathLike[str], into: str | os.PathLike[str], **open_args: Any):
    """Rebuild the agent recorded in ``trace_path`` in the new directory ``into``.

    Returns the replayed agent (open; close it). ``open_args`` go to
    :meth:`kernel.Agent.create` (e.g. ``functions`` for user functions the
    original agent had, or ``embedder``).
    """
    from kernel.agent import Agent, AgentConfig, context_digest
    from kernel.drivers import ReplayDriver

    events = list(read_trace(trace_path))
    if not events or events[0].get("e") != "create":
        raise ValueError(f"{trace_path} does not start with an agent's creation")
    create = events[0]
    exchanges = [{k: v for k, v in e.items() if k not in ("e", "purpose")} for e in events if e["e"] == "llm"]
    times = iter([_dt.datetime.fromtimestamp(e["time"], _dt.timezone.utc)
                  for e in events if e["e"] in ("create", "user")])
    blocks = {label: {"value": value, "limit": limit, "description": desc, "read_only": ro}
              for label, value, limit, desc, ro in create["blocks"]}
    agent = Agent.create(into, system=create["system"], blocks=blocks,
                         driver=ReplayDriver(exchanges, digest=context_digest),
                         config=AgentConfig(**create["config"]), clock=lambda: next(times), **open_args)
    for event in events:
        if event["e"] == "user":
            agent.step(event["text"])
    return agent
