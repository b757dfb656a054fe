"""Agent: a Memory, an LLM driver, and the step loop between them.

One user message (:meth:`Agent.step`) is one transaction of the memory::

    append the user message
    repeat (one LLM call each, at most rules.max_steps):
        prepare the context (prefetch, alert, flush: summaries through the same driver)
        compile it and call the driver (a provider's overflow error: flush, ask once more)
        record the answer; execute its memory function calls (a repeated call is refused)
        chain another step when a non-terminal call asked for a heartbeat or failed (StepRules)

Every effect commits when the step returns, or none does when it raises (a driver
error, a ContextWindowError, Ctrl-C): the memory is then exactly as before the step, and
the same message can be sent again.

The loop is written once, as a generator that yields driver requests and is sent
completions; :meth:`Agent.step` drives it synchronously and :meth:`Agent.astep` with
``await``. It uses only the public :class:`Memory` API.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vmem.kernel.config import MemoryConfig
from vmem.kernel.context import MEMORY_INSTRUCTIONS, context_digest
from vmem.kernel.drivers import Completion, ContextOverflowError, Driver, DriverError, ToolCall, Usage
from vmem.kernel.drivers.replay import exchange
from vmem.kernel.drivers.toolcalls import checked_call
from vmem.kernel.errors import BusyError, ReadOnlyError
from vmem.kernel.functions import CallRecord, MemoryFunction
from vmem.kernel.memory import Memory, Prepared
from vmem.kernel.rules import StepRules, TurnGuard

__all__ = ["Agent", "StepResult"]


@dataclass
class StepResult:
    """What one user message produced."""

    replies: list[str] = field(default_factory=list)  #: messages for the user (send_message, or plain text)
    calls: list[CallRecord] = field(default_factory=list)  #: the memory function calls made
    steps: int = 0  #: LLM calls made for the answer (summaries excluded)
    flushes: int = 0
    alerts: int = 0
    paged_in: list[int] = field(default_factory=list)  #: pages prefetched into the working set
    usage: list[Usage] = field(default_factory=list)  #: what the provider reported, per LLM call
    stopped: str = "done"  #: why the chain ended: "done"; "max_steps", "repeat", "tool_cap" or "call_cap" when a rule cut it


@dataclass
class _Request:
    """A driver call the step generator asks for."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    purpose: str  # "step" or "summary"
    digest: str | None = None


class Agent:
    """A persistent agent: a :class:`Memory` driven by an LLM through a :class:`Driver`.

    Build one over a memory (``Agent(memory, driver)``), or create / open memory and agent
    together with :meth:`create` and :meth:`open`. Talk with :meth:`step` or ``await``
    :meth:`astep`; :meth:`close` closes the memory. One step at a time: a second concurrent
    one gets :class:`BusyError`.
    """

    def __init__(self, memory: Memory, driver: Driver, *, rules: StepRules | None = None) -> None:
        self.memory = memory
        self.driver = driver
        self.rules = rules or StepRules()
        self._running = threading.Lock()  # held while a step runs (one at a time, any thread or task)
        #: Held while a step runs. Another thread that uses :attr:`memory` between steps holds it
        #: meanwhile (:class:`vmem.kernel.daemon.ConsolidationDaemon` does, for its short apply): a
        #: step that starts then waits for it to finish (never for an LLM call).
        self.lock = threading.Lock()
        #: Called with the agent in the stepping thread after each step ends (committed or rolled
        #: back), outside the step and its lock. A hook must be quick and must not raise.
        self.after_step: list[Callable[["Agent"], None]] = []
        if not memory.read_only:
            memory.log({"e": "rules", "rules": self.rules.to_dict()})

    @classmethod
    def create(cls, path: str | os.PathLike[str], *, system: str, driver: Driver,
               blocks: Mapping[str, str | Mapping[str, Any]] | None = None, config: MemoryConfig | None = None,
               rules: StepRules | None = None, functions: Iterable[MemoryFunction | Callable[..., Any]] = (),
               embedder: Any = None, archival: Any = None, clock: Callable[[], _dt.datetime] | None = None,
               durability: str = "full", instructions: str | None = MEMORY_INSTRUCTIONS) -> "Agent":
        """Create a memory in ``path`` (see :meth:`Memory.create`, and its ``instructions``) and an agent over it."""
        memory = Memory.create(path, system=system, blocks=blocks, config=config, functions=functions,
                               embedder=embedder, archival=archival, clock=clock, durability=durability,
                               instructions=instructions)
        try:
            return cls(memory, driver, rules=rules)
        except BaseException:
            memory.close()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike[str], *, driver: Driver, rules: StepRules | None = None,
             functions: Iterable[MemoryFunction | Callable[..., Any]] = (), embedder: Any = None,
             archival: Any = None, clock: Callable[[], _dt.datetime] | None = None, durability: str = "full",
             read_only: bool = False) -> "Agent":
        """Reopen the memory in ``path`` (see :meth:`Memory.open`) and an agent over it."""
        memory = Memory.open(path, functions=functions, embedder=embedder, archival=archival, clock=clock,
                             durability=durability, read_only=read_only)
        try:
            return cls(memory, driver, rules=rules)
        except BaseException:
            memory.close()
            raise

    @staticmethod
    def exists(path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` holds an agent's memory."""
        return Memory.exists(path)

    def close(self) -> None:
        """Close the memory (everything was saved as each step committed); waits for another
        thread that holds :attr:`lock`."""
        with self.lock:
            self.memory.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Agent {self.memory!r} driver={self.driver!r}>"

    # ------------------------------------------------------------ the step loop

    def _run(self, user_message: str, prefetch_for: str | None) -> Generator[_Request, Completion, StepResult]:
        memory = self.memory
        result = StepResult()
        guard = TurnGuard(self.rules)
        with memory.transaction():
            memory.append({"role": "user", "content": user_message}, prefetch_for=prefetch_for)
            while True:  # one LLM call per iteration
                yield from self._prepare(result, force=False)
                messages = memory.compile()
                try:
                    completion = yield _Request(messages, memory.tools, "step", messages.digest)
                except ContextOverflowError:  # the provider counts more than we do: flush and ask once more
                    yield from self._prepare(result, force=True)
                    messages = memory.compile()
                    completion = yield _Request(messages, memory.tools, "step", messages.digest)
                result.steps += 1
                if completion.usage is not None:
                    result.usage.append(completion.usage)
                    memory.observe_usage(completion.usage.prompt_tokens)
                chain = self._record(completion, result, guard)
                if not chain:
                    break
                if result.steps >= self.rules.max_steps:
                    result.stopped = "max_steps"
                    break
        return result

    def _prepare(self, result: StepResult, force: bool) -> Generator[_Request, Completion, Prepared]:
        """Drive Memory.prepare: its summarizer requests go to the driver."""
        gen = self.memory.prepare(force=force)
        try:
            request = next(gen)
            while True:
                completion = yield _Request(request, [], "summary")
                request = gen.send(completion.text or "")
        except StopIteration as stop:
            prepared: Prepared = stop.value
        finally:
            gen.close()
        result.flushes += prepared.room.flushes
        result.alerts += prepared.room.alerted
        result.paged_in.extend(prepared.paged_in)
        return prepared

    def _record(self, completion: Completion, result: StepResult, guard: TurnGuard) -> bool:
        """Record the answer and run its calls (within the rules); True to chain another step."""
        memory = self.memory
        calls = [checked_call(c) for c in _unique_ids(completion.tool_calls)]
        if not calls:
            text = (completion.text or "").strip()
            memory.append({"role": "assistant", "content": text})
            if text:
                result.replies.append(text)
            return False
        cap = min(self.rules.max_calls_per_answer, memory.config.max_calls, memory.pressure.calls_that_fit())
        calls, over = calls[:cap], calls[cap:]
        memory.append({"role": "assistant", "content": completion.text or None,
                       "tool_calls": [c.to_openai() for c in calls]})
        chain = refused = False
        for call in calls:
            why = guard.refusal(call)
            if why is not None:  # answered, not run; the turn ends
                refused = True
                result.stopped = "repeat" if why.startswith("refused: this call repeats") else "tool_cap"
                record = CallRecord(call.name, call.arguments, False, json.dumps({"status": "Failed", "message": why}),
                                    call_id=call.id)
                memory.log({"e": "refused", "name": call.name, "reason": result.stopped})
                memory.append({"role": "tool", "tool_call_id": call.id, "name": call.name, "content": record.result})
            else:
                record = memory.execute(call)
                chain = chain or guard.chains(call, record.ok, record.heartbeat)
            result.calls.append(record)
            result.replies.extend(record.replies)
        if over:  # not run, not in the recorded answer (the trace's llm event has all of it): refused in a note
            result.stopped = "call_cap"
            why = (f"refused: this answer made {len(calls) + len(over)} tool calls; at most {cap} run per answer, "
                   f"so the other {len(over)} ({_names(over)}) were not run. Make fewer calls per answer.")
            for call in over:
                result.calls.append(CallRecord(call.name, call.arguments, False,
                                               json.dumps({"status": "Failed", "message": why}), call_id=call.id))
            memory.log({"e": "refused", "name": _names(over), "reason": "call_cap", "calls": len(over)})
            memory.append({"role": "system", "content": why})
            return False
        return chain and not refused

    # ------------------------------------------------------------ driving the loop

    def _start(self, user_message: str,
               prefetch_for: str | None) -> tuple[Generator[_Request, Completion, StepResult], _Request]:
        if self.memory.read_only:
            raise ReadOnlyError("this agent was opened read-only (for inspection): it cannot step")
        if not isinstance(user_message, str):
            raise TypeError(f"user_message must be a str, got {type(user_message).__name__}")
        if not self._running.acquire(blocking=False):
            raise BusyError("a step is already running on this agent (one at a time)")
        try:
            self.lock.acquire()  # another thread's short use of the memory (a daemon's apply) ends first
        except BaseException:
            self._running.release()
            raise
        try:
            gen = self._run(user_message, prefetch_for)
            return gen, next(gen)
        except BaseException:
            self.lock.release()
            self._running.release()
            raise

    def _log(self, request: _Request, outcome: Completion | DriverError) -> None:
        digest = request.digest or context_digest(request.messages, request.tools)
        self.memory.log({"e": "llm", "purpose": request.purpose,
                         **exchange(request.messages, request.tools, outcome, digest=digest)})

    def _ended(self) -> None:
        self.lock.release()
        self._running.release()
        for hook in list(self.after_step):
            hook(self)

    def step(self, user_message: str, *, prefetch_for: str | None = None) -> StepResult:
        """Handle one user message; returns the replies and what happened. All or nothing:
        if it raises, the memory is as it was before. ``prefetch_for``: what prefetch searches for
        instead of the message (see :meth:`Memory.append`)."""
        gen, request = self._start(user_message, prefetch_for)
        try:
            while True:
                self.memory.store.checkpoint_in_background()  # the WAL is folded while the LLM thinks
                try:
                    completion = _checked(self.driver.complete(request.messages, request.tools))
                except ContextOverflowError as exc:
                    self._log(request, exc)
                    outcome = _resume(gen, throw=exc)
                else:
                    self._log(request, completion)
                    outcome = _resume(gen, send=completion)
                if isinstance(outcome, StepResult):
                    return outcome
                request = outcome
        finally:
            gen.close()  # an exception out here (a driver error, Ctrl-C) rolls the step back
            self._ended()

    async def astep(self, user_message: str, *, prefetch_for: str | None = None) -> StepResult:
        """Handle one user message with ``await`` (no thread blocks on the LLM); as :meth:`step`."""
        gen, request = self._start(user_message, prefetch_for)
        try:
            while True:
                self.memory.store.checkpoint_in_background()
                try:
                    completion = _checked(await self.driver.acomplete(request.messages, request.tools))
                except ContextOverflowError as exc:
                    self._log(request, exc)
                    outcome = _resume(gen, throw=exc)
                else:
                    self._log(request, completion)
                    outcome = _resume(gen, send=completion)
                if isinstance(outcome, StepResult):
                    return outcome
                request = outcome
        finally:
            gen.close()
            self._ended()


def _checked(completion: Any) -> Completion:
    if not isinstance(completion, Completion):
        raise DriverError(f"the driver returned {type(completion).__name__}, not a Completion", attempts=0)
    return completion


def _resume(gen: Generator[_Request, Completion, StepResult], *, send: Completion | None = None,
            throw: BaseException | None = None) -> _Request | StepResult:
    """The loop's next request, or its result when it ends (only the loop's own StopIteration ends it)."""
    try:
        return gen.throw(throw) if throw is not None else gen.send(send)  # type: ignore[arg-type]
    except StopIteration as stop:
        result: _Request | StepResult = stop.value
        return result


def _names(calls: list[ToolCall]) -> str:
    """``archival_memory_insert x92, send_message x1``: what a list of calls called."""
    counts: dict[str, int] = {}
    for call in calls:
        counts[call.name] = counts.get(call.name, 0) + 1
    return ", ".join(f"{name} x{n}" for name, n in counts.items())


def _unique_ids(calls: list[ToolCall]) -> list[ToolCall]:
    """The calls with unique, non-empty ids (a model may repeat or omit them)."""
    seen: set[str] = set()
    out = []
    for k, call in enumerate(calls):
        cid = call.id or f"call_{k}"
        while cid in seen:
            cid = f"{cid}_{k}"
        seen.add(cid)
        out.append(call if cid == call.id else ToolCall(cid, call.name, call.arguments, call.error, call.raw_arguments))
    return out
