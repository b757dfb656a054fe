"""The consolidation daemon in-process: a background thread that consolidates an Agent's memory.

Interface::

    daemon = ConsolidationDaemon(agent, driver, DaemonConfig(every=5, idle=30.0))
    agent.step("...")          # steps as usual; the daemon never makes one wait
    daemon.wait()              # (optional) finish the run in flight and apply it now
    daemon.stop()              # or use it as a context manager
    daemon.reports             # a RunReport per applied run; daemon.errors: what failed

What runs where (the Memory is single-writer and not thread-safe, and a step must never
wait for the daemon's LLM):

- In the agent's thread, between steps (the agent calls :meth:`tick` before a step starts
  and after it ends: :attr:`vmem.kernel.Agent.between_steps`): a finished run is applied,
  in one short transaction (:func:`vmem.kernel.consolidation.apply`: no LLM call in it), so
  its writes reach the very next compiled context; and, when ``every`` user turns have come
  since the last batch, the next batch is read (the new messages, the blocks, a few archival
  searches: a read of committed state, once every ``every`` turns) and handed to the worker.
- In the worker thread: the LLM calls (:func:`~vmem.kernel.consolidation.ask`), which touch
  no memory. With ``idle`` set, when no step has come for ``idle`` seconds and messages wait,
  the worker reads the batch itself from a read-only open of the store (committed state,
  no lock: the agent may step meanwhile); that run is applied at the next :meth:`tick` (the
  agent's next step, or :meth:`wait`).

One run at a time; each starts where the previous batch ended. A run whose LLM call failed
(a DriverError) is dropped and its turns are read again by the next one; a run whose apply
failed changes nothing (one transaction) and is counted in :attr:`errors`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vmem.kernel.consolidation import MAX_BATCH_CHARS, Answer, RunReport, StaleBatch, apply, ask, take_batch
from vmem.kernel.drivers import Driver
from vmem.kernel.errors import BusyError
from vmem.kernel.proposals import Batch
from vmem.storage import MemoryDir

if TYPE_CHECKING:
    from vmem.kernel.agent import Agent

__all__ = ["ConsolidationDaemon", "DaemonConfig"]


@dataclass(frozen=True)
class DaemonConfig:
    """When the daemon runs and how much it asks."""

    every: int = 5  #: run after this many new user turns (0: never by count)
    idle: float | None = None  #: also run once no step came for this many seconds (None: never by idleness)
    checks: int = 4  #: yes/no calls per run about facts the new ones may replace
    max_chars: int = MAX_BATCH_CHARS  #: the text of the turns one run reads

    def __post_init__(self) -> None:
        if self.every < 0 or self.checks < 0 or self.max_chars < 100:
            raise ValueError("every and checks must be >= 0, max_chars >= 100")
        if self.idle is not None and self.idle <= 0:
            raise ValueError("idle must be a positive number of seconds, or None")
        if self.every == 0 and self.idle is None:
            raise ValueError("the daemon needs a trigger: every > 0 or idle")


class ConsolidationDaemon:
    """Consolidates ``agent``'s memory in the background with ``driver`` (see the module docstring).
    Starts at once; :meth:`stop` (or leaving a ``with`` block) ends it."""

    def __init__(self, agent: "Agent", driver: Driver, config: DaemonConfig | None = None) -> None:
        self.agent = agent
        self.driver = driver
        self.config = config or DaemonConfig()
        self.reports: list[RunReport] = []  #: the runs applied, in order
        self.errors: list[str] = []  #: runs that failed (the LLM, or an apply that rolled back)
        memory = agent.memory
        self._cond = threading.Condition()
        self._taken = memory.consolidation_cursor  # the last message handed to a run
        self._turns = memory.state.turns  # user turns when the last batch was taken
        self._seen = memory.stats.recall  # messages stored, at the last tick
        self._last_tick = time.monotonic()
        self._job: Batch | None = None  # a batch waiting for the worker
        self._busy = False  # a batch is with the worker or its result waits to be applied
        self._done: tuple[Batch, Answer] | None = None  # a finished run, to apply in the agent's thread
        self._stopping = False
        self._full = False  # the last batch stopped short of the newest message: run again without waiting
        self._path = memory.store.path
        self._embedder = memory.store.embedder
        self._thread = threading.Thread(target=self._work, name=f"vmem-consolidate:{self._path.name}", daemon=True)
        agent.between_steps.append(self.tick)
        self._thread.start()

    # ------------------------------------------------------------ the agent's thread

    def tick(self, agent: "Agent | None" = None) -> None:
        """Between steps, in the agent's thread: apply a finished run, start the next one when
        it is due. Never raises (a failure is recorded in :attr:`errors`)."""
        memory = self.agent.memory
        if memory.closed or memory.read_only:
            return
        with self._cond:
            done, self._done = self._done, None
        if done is not None:
            batch, answer = done
            try:
                self.reports.append(apply(memory, batch, answer))
            except BusyError:  # a step runs in another thread: apply at the next tick
                with self._cond:
                    self._done = done
                return
            except StaleBatch as exc:
                self._fail(f"stale batch dropped: {exc}", memory)
            except Exception as exc:  # noqa: BLE001 - the run rolled back; the agent goes on
                self._fail(f"apply failed ({type(exc).__name__}: {exc}); nothing was changed", memory)
            else:
                with self._cond:
                    self._busy = False
        with self._cond:
            self._seen = memory.stats.recall
            self._last_tick = time.monotonic()
            if not self._busy:
                self._taken = max(self._taken, memory.consolidation_cursor)  # a run applied by someone else
            due = (not self._busy and not self._stopping and self._seen > self._taken
                   and (self._full or (self.config.every and memory.state.turns - self._turns >= self.config.every)))
        if due:
            try:
                batch = take_batch(memory.store, self._taken, max_chars=self.config.max_chars)
            except Exception as exc:  # noqa: BLE001
                self._fail(f"reading the batch failed ({type(exc).__name__}: {exc})", memory)
                return
            self._hand(batch, memory.state.turns)

    def _hand(self, batch: Batch | None, turns: int) -> None:
        with self._cond:
            if batch is None or self._busy:
                return
            self._job = batch
            self._busy = True
            self._taken = batch.end
            self._turns = turns
            self._full = batch.end < self._seen
            self._cond.notify_all()

    def _fail(self, why: str, memory: Any) -> None:
        self.errors.append(why)
        with self._cond:
            self._busy = False
            self._taken = memory.consolidation_cursor if not memory.closed else self._taken
            self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Finish the run in flight (and, if messages wait and none is in flight, start one now),
        then apply it in the caller's thread, which must be the agent's and not inside a step.
        True when nothing is left in flight."""
        memory = self.agent.memory
        with self._cond:
            idle = not self._busy and self._taken < memory.stats.recall
        if idle:
            self._hand(take_batch(memory.store, self._taken, max_chars=self.config.max_chars), memory.state.turns)
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._busy and self._done is None and not self._stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        self.tick()
        with self._cond:
            return not self._busy

    def ready(self) -> bool:
        """Whether a finished run waits to be applied (by the next :meth:`tick`)."""
        with self._cond:
            return self._done is not None

    @property
    def running(self) -> bool:
        """Whether a run is in flight (its LLM call, or its result waiting to be applied)."""
        with self._cond:
            return self._busy

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop the worker (a run in flight finishes its LLM call and is dropped unless applied
        by a last :meth:`tick` of the caller's); unhook from the agent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self.tick in self.agent.between_steps:
            self.agent.between_steps.remove(self.tick)

    def __enter__(self) -> "ConsolidationDaemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the worker thread

    def _work(self) -> None:
        while True:
            with self._cond:
                while self._job is None and not self._stopping and not self._idle_due():
                    self._cond.wait(self._idle_wait())
                if self._stopping:
                    return
                job, self._job = self._job, None
                if job is None:  # idle: read the batch here, from committed state
                    self._busy = True
                    start = self._taken
            if job is None:
                job = self._read_idle(start)
                if job is None:
                    continue
            try:
                answer = ask(job, self.driver, checks=self.config.checks)
            except Exception as exc:  # noqa: BLE001 - a DriverError or a bug: this run is dropped, retried later
                self.errors.append(f"the daemon's LLM call failed ({type(exc).__name__}: {exc})")
                with self._cond:
                    self._busy = False
                    self._taken = job.start
                    self._cond.notify_all()
                    self._cond.wait(1.0)  # no hot loop on a server that is down
                continue
            with self._cond:
                self._done = (job, answer)
                self._cond.notify_all()

    def _idle_due(self) -> bool:
        idle = self.config.idle
        return (idle is not None and not self._busy and self._seen > self._taken
                and time.monotonic() - self._last_tick >= idle)

    def _idle_wait(self) -> float | None:
        idle = self.config.idle
        if idle is None:
            return None
        return max(0.01, idle - (time.monotonic() - self._last_tick))

    def _read_idle(self, start: int) -> Batch | None:
        try:
            with MemoryDir.open(self._path, create=False, read_only=True, embedder=self._embedder) as store:
                batch = take_batch(store, start, max_chars=self.config.max_chars)
        except Exception as exc:  # noqa: BLE001
            self.errors.append(f"reading the batch failed ({type(exc).__name__}: {exc})")
            batch = None
        with self._cond:
            if batch is None:
                self._busy = False
                self._last_tick = time.monotonic()  # wait another idle period before trying again
            else:
                self._taken = batch.end
                self._full = batch.end < self._seen
            self._cond.notify_all()
        return batch
