"""Fault injection: every boundary, every call, an exception or a SIGKILL (a directory or PostgreSQL).

A scripted conversation (:func:`scenario`) exercises the whole kernel: memory pressure
(alerts, flushes with recursive summaries), page faults, prefetch, archival inserts, core
memory edits, failed calls, and a user memory function. A :class:`Fault` names a boundary
and the k-th call to it; when the run reaches that call, it raises :class:`InjectedFault`
(``raise``) or the process kills itself with SIGKILL (``kill``). Boundaries:

    recall.append      a message written to recall storage
    blocks.set         a core memory block written
    archival.insert    passages written (embedding, SQLite, index)
    state.save         the kernel's state or core snapshot written
    events.write       trace events written
    journal.write      the core's operations journaled
    commit             a transaction's COMMIT (before it runs)
    index.add          an HNSW add after a commit (a cache: its failure is logged)
    index.query        an HNSW search (a page fault or a prefetch)
    driver.step        an LLM call of a step
    driver.summary     an LLM call for a summary
    function           the user's memory function

After a fault, :func:`verify` (run in a new process) reopens the agent and checks: the
memory's invariants (Memory.check, which includes "every tool call has its result");
every message acknowledged before the fault is in recall storage, and no message whose
step failed is (atomic steps; after a SIGKILL the step in flight may have committed whole);
and the conversation goes on: one more step, checked again.

    python tests/faults.py run DIR --fault BOUNDARY:K:MODE --acked FILE   (one run, in a child process)
    python tests/faults.py verify CASES.json                              (checks, in a new process)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from vmem.index import BaseIndex  # noqa: E402
from vmem.kernel import Agent, Memory, MemoryConfig, memory_function  # noqa: E402
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall  # noqa: E402
from vmem.storage import RecallStore  # noqa: E402
from vmem.storage._db import Database  # noqa: E402
from vmem.storage.archival import ArchivalStore  # noqa: E402
from vmem.storage.blocks import Blocks, KernelState  # noqa: E402
from vmem.storage.events import EventLog  # noqa: E402
from vmem.storage.journal import Journal  # noqa: E402
from vmem.storage.postgres_db import PgDatabase  # noqa: E402
from vmem.storage.postgres_tiers import PgBlocks, PgEventLog, PgJournal, PgKernelState, PgRecall  # noqa: E402

BOUNDARIES = ("recall.append", "blocks.set", "archival.insert", "state.save", "events.write", "journal.write", "commit",
              "index.add", "index.query", "driver.step", "driver.summary", "function")

_METHODS: dict[str, tuple[type, str]] = {
    "recall.append": (RecallStore, "append_many"),
    "blocks.set": (Blocks, "set"),
    "archival.insert": (ArchivalStore, "insert_many"),
    "state.save": (KernelState, "__setitem__"),
    "events.write": (EventLog, "extend_packed"),
    "journal.write": (Journal, "append"),
    "commit": (Database, "_commit"),
    "index.add": (BaseIndex, "add"),
    "index.query": (BaseIndex, "query"),
}
#: The same boundaries in the PostgreSQL store, whose classes override those methods (a run
#: uses one store, so a boundary is counted once per crossing). Its COMMIT carries the
#: pipelined writes of the transaction: the database's round trip is the commit boundary.
_PG_METHODS: dict[str, tuple[type, str]] = {
    "recall.append": (PgRecall, "append_many"),
    "blocks.set": (PgBlocks, "set"),
    "state.save": (PgKernelState, "__setitem__"),
    "events.write": (PgEventLog, "extend_packed"),
    "journal.write": (PgJournal, "append"),
    "commit": (PgDatabase, "_commit"),
}


class InjectedFault(RuntimeError):
    """The fault a run was told to raise."""


@dataclass(frozen=True)
class Fault:
    """The k-th call (1-based) to a boundary raises, or kills the process."""

    boundary: str
    k: int
    mode: str = "raise"  # or "kill"

    @classmethod
    def parse(cls, text: str) -> "Fault":
        boundary, k, mode = text.split(":")
        return cls(boundary, int(k), mode)

    def __str__(self) -> str:
        return f"{self.boundary}:{self.k}:{self.mode}"


@dataclass
class Injector:
    """Counts the calls to every boundary; fires the fault at its call."""

    fault: Fault | None = None
    calls: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BOUNDARIES, 0))
    fired: bool = False

    def hit(self, boundary: str) -> None:
        self.calls[boundary] += 1
        f = self.fault
        if f is not None and not self.fired and f.boundary == boundary and self.calls[boundary] == f.k:
            self.fired = True
            if f.mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected at {f}")


_ACTIVE: list[Injector] = []


def _hit(boundary: str) -> None:
    if _ACTIVE:
        _ACTIVE[-1].hit(boundary)


@contextmanager
def injecting(injector: Injector) -> Iterator[Injector]:
    """Wrap every boundary method while the block runs."""
    saved = []
    for boundary, (cls, name) in [*_METHODS.items(), *_PG_METHODS.items()]:
        original = cls.__dict__[name]

        def wrapper(*args: Any, __original: Callable[..., Any] = original, __b: str = boundary, **kw: Any) -> Any:
            _hit(__b)
            return __original(*args, **kw)

        saved.append((cls, name, original))
        setattr(cls, name, wrapper)
    _ACTIVE.append(injector)
    try:
        yield injector
    finally:
        _ACTIVE.pop()
        for cls, name, original in saved:
            setattr(cls, name, original)


# ---------------------------------------------------------------- the scenario


@memory_function
def lookup_order(order: str) -> str:
    """Look an order up in the shop's system.

    Args:
        order: the order number.
    """
    _hit("function")
    if order.endswith("7"):
        raise ValueError(f"order {order} is unknown")
    return f"order {order}: shipped"


FUNCTIONS = [lookup_order]
CONFIG = MemoryConfig(window=3840, reserve_output=256, keep_last=4, prefetch=1, page_size=3)
SYSTEM = "You are a shop assistant with a paged memory."
BLOCKS = {"human": {"value": "", "limit": 400}, "persona": "I am brief."}
TOPICS = ["the blue kettle", "order 1207", "a refund for the lamp", "delivery to Porto", "the gift card",
          "order 3317", "the warranty of the toaster", "a red scarf", "the invoice address", "order 4457"]


def user_messages(n: int = 22) -> list[str]:
    """The conversation's user messages (deterministic)."""
    return [f"message {i} about {TOPICS[i % len(TOPICS)]}: " + "please keep this in mind " * (3 + i % 5)
            for i in range(n)]


def policy(messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Completion:
    """The scripted model: a deterministic choice of memory calls for each user message."""
    if not tools:
        _hit("driver.summary")
        last = messages[-1]["content"]
        return Completion(text=f"Summary of {len(last.splitlines())} lines: the user asked about orders.")
    _hit("driver.step")
    last = next(m for m in reversed(messages) if m["role"] != "system")  # after it: the working set, statistics
    users = [m for m in messages if m["role"] == "user"]
    turn = int(users[-1]["content"].split()[1]) if users and users[-1]["content"].startswith("message ") else 0
    if last["role"] != "user":
        return Completion(tool_calls=[ToolCall(f"done-{turn}-{len(messages)}", "send_message",
                                               {"message": f"done with {turn}"})])
    kind = turn % 6
    cid = f"c{turn}-{len(messages)}"
    if kind == 0:
        call = ToolCall(cid, "archival_memory_insert", {"content": f"note {turn}: {TOPICS[turn % 10]}",
                                                        "request_heartbeat": True})
    elif kind == 1:
        call = ToolCall(cid, "archival_memory_search", {"query": TOPICS[(turn + 3) % 10], "request_heartbeat": True})
    elif kind == 2:
        call = ToolCall(cid, "core_memory_append", {"label": "human", "content": f"asked about {turn}",
                                                    "request_heartbeat": True})
    elif kind == 3:
        call = ToolCall(cid, "lookup_order", {"order": f"{1000 + turn}", "request_heartbeat": True})
    elif kind == 4:
        call = ToolCall(cid, "core_memory_replace", {"label": "human", "old_content": "absent", "new_content": "x"})
    else:
        call = ToolCall(cid, "conversation_search", {"query": "kettle", "request_heartbeat": True})
    return Completion(tool_calls=[call])


def new_agent(path: Path) -> Agent:
    return Agent.create(path, system=SYSTEM, blocks=BLOCKS, driver=ScriptedDriver(policy), config=CONFIG,
                        functions=FUNCTIONS)


@dataclass
class Outcome:
    """What one run did: the steps acknowledged (returned) and the ones that raised."""

    acked: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def scenario(path: Path, on_ack: Callable[[int], None] | None = None) -> Outcome:
    """Create the agent in ``path`` and talk through the conversation; a step that raises is
    recorded and the conversation goes on with the next message (the agent must stay usable)."""
    out = Outcome()
    try:
        agent = new_agent(path)
    except InjectedFault as exc:
        out.errors.append(f"create: {exc}")
        return out
    try:
        for i, text in enumerate(user_messages()):
            try:
                agent.step(text)
            except InjectedFault as exc:
                out.failed.append(i)
                out.errors.append(f"step {i}: {exc}")
                continue
            out.acked.append(i)
            if on_ack is not None:
                on_ack(i)
    finally:
        agent.close()
    return out


# ---------------------------------------------------------------- checks (in a new process)


def verify(path: Path, acked: list[int], failed: list[int], in_flight: int | None = None) -> str | None:
    """Reopen and check (see the module docstring); None if all holds, else what failed."""
    texts = user_messages()
    if not Memory.exists(path):
        return None if not acked else f"{path}: no memory, but steps {acked} were acknowledged"
    try:
        agent = Agent.open(path, driver=ScriptedDriver(policy), functions=FUNCTIONS)
    except Exception as exc:  # noqa: BLE001 - the report says what went wrong
        return f"{path}: reopening failed: {type(exc).__name__}: {exc}"
    try:
        memory = agent.memory
        memory.check()
        stored = {m.content for m in memory.store.recall.search(None, roles=["user"], page_size=1000).items}
        for i in acked:
            if texts[i] not in stored:
                return f"{path}: acknowledged message {i} is not in recall storage"
        for i in failed:
            if texts[i] in stored and i != in_flight:
                return f"{path}: message {i}, whose step failed, is in recall storage"
        if memory.pending_calls:
            return f"{path}: calls {memory.pending_calls} have no result"
        agent.step("message 99 about the blue kettle: one more")
        memory.check()
    except Exception as exc:  # noqa: BLE001
        return f"{path}: {type(exc).__name__}: {exc}"
    finally:
        agent.close()
    return None


def _location(text: str) -> Any:
    """A directory (Path) or a PostgreSQL URL (str, as given)."""
    return text if text.startswith(("postgresql://", "postgres://")) else Path(text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run", help="run the scenario with one fault (the child of a kill run)")
    run.add_argument("dir", type=_location, help="a directory or a postgresql://...?agent=NAME URL")
    run.add_argument("--fault", type=Fault.parse, required=True)
    run.add_argument("--acked", type=Path, required=True)
    ver = sub.add_parser("verify", help="check the directories of finished runs")
    ver.add_argument("cases", type=Path, help="JSON list of {dir, acked, failed, in_flight}")
    args = p.parse_args(argv)
    if args.cmd == "run":
        with open(args.acked, "a", encoding="utf-8") as log, injecting(Injector(args.fault)):
            def ack(i: int) -> None:
                log.write(f"{i}\n")
                log.flush()
                os.fsync(log.fileno())
            scenario(args.dir, ack)
        return 0
    cases = json.loads(args.cases.read_text())
    problems = [r for c in cases if (r := verify(_location(c["dir"]), c["acked"], c["failed"], c.get("in_flight")))]
    print(json.dumps(problems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
