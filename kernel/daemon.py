"""The consolidation daemon in-process: a background thread that consolidates an Agent's memory.

Interface::

    daemon = ConsolidationDaemon(agent, driver, DaemonConfig(every=5, idle=30.0))
    agent.step("...")          # steps as usual; no step waits for the daemon's LLM
    daemon.wait()              # (optional) run now on what waits, and return once it is applied
    daemon.stop()              # or use it as a context manager
    daemon.reports             # a RunReport per applied run; daemon.errors: what failed

What runs where. The Memory is single-writer and not thread-safe, and a step must never wait
for the daemon's LLM. A step holds :attr:`vmem.kernel.Agent.lock`; the daemon's worker thread
holds it only for the short parts of a run, between steps:

    step ends  ──notify──▶  worker: with agent.lock: due? read the batch    (ms: committed state)
                            worker: ask the LLM, holding nothing             (seconds)
                              with agent.lock, per new fact: one search for the facts it may replace (ms)
                            worker: with agent.lock: apply, one transaction  (ms: no LLM in it)

So a run's writes reach the agent's next compiled context, and a step that starts while the
worker reads or applies waits for that part only (milliseconds), never for the LLM. Due: when
``every`` user turns have come since the last batch, or, with ``idle``, when no step came for
``idle`` seconds and messages wait; a batch that stopped short of the newest message (its text
was full) is followed by the next at once. One run at a time; each starts where the previous
batch ended. A run whose LLM call failed (a DriverError) or whose apply failed (it changed
nothing: one transaction) is counted in :attr:`errors` and its turns are read again by the next
run. Other code that uses ``agent.memory`` from another thread between steps holds
``agent.lock`` meanwhile, as the daemon does.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vmem.kernel.consolidation import (
    CHECKS,
    MAX_BATCH_CHARS,
    PICKS,
    RunReport,
    StaleBatch,
    apply,
    ask,
    facts_like,
    take_batch,
)
from vmem.kernel.drivers import Driver
from vmem.kernel.errors import BusyError
from vmem.kernel.proposals import Batch, KnownFact
from vmem.storage.postgres import PgStore

if TYPE_CHECKING:
    from vmem.kernel.agent import Agent

__all__ = ["ConsolidationDaemon", "DaemonConfig"]


#: Longest the worker sleeps between looks at the memory when no step woke it (seconds): steps wake
#: it when a run is due, and this bounds the wait should such a wake-up be missed.
POLL = 1.0
#: Times the worker applies a run whose apply met BusyError (another thread's moment with the
#: memory, outside any step), a short sleep apart, before it counts the run as failed.
BUSY_TRIES = 20


@dataclass(frozen=True)
class DaemonConfig:
    """When the daemon runs and how much it asks."""

    every: int = 5  #: run once this many new user turns wait (0: never by count)
    idle: float | None = None  #: also run once no step came for this many seconds (None: never by idleness)
    checks: int = CHECKS  #: yes/no calls per run about facts the new ones may replace
    picks: int = PICKS  #: "which known fact is it about?" calls per run
    max_chars: int = MAX_BATCH_CHARS  #: the text of the turns one run reads

    def __post_init__(self) -> None:
        if self.every < 0 or self.checks < 0 or self.picks < 0 or self.max_chars < 100:
            raise ValueError("every, checks and picks must be >= 0, max_chars >= 100")
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
        self._cond = threading.Condition()
        self._stopping = False
        self._last_run = False  # stop() came: the run due by count then, if any, is the last
        self._forced = 0  # wait() calls asking for a run now
        self._running = False  # the worker is in a run (reading, asking or applying)
        self._full = False  # the last batch stopped short of the newest message
        self._last_step = time.monotonic()
        self._steps = 0  #: steps ended since the daemon started
        self._nothing = False  # no message waited at the last look
        self._read_seconds = 0.0
        with agent.lock:
            memory = agent.memory
            self._turns = memory.state.turns  # user turns when the last batch was read
            self._taken = memory.consolidation_cursor
        agent.after_step.append(self._stepped)
        store = memory.store
        name = store.agent if isinstance(store, PgStore) else store.path.name
        self._thread = threading.Thread(target=self._work, name=f"vmem-consolidate:{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ called from other threads

    def _stepped(self, agent: "Agent") -> None:
        """After each step (in the stepping thread): wake the worker only when a run is due by
        count. A thread woken for nothing costs the foreground a context switch, which on a busy
        machine is milliseconds; the idle trigger needs no wake-up (the worker sleeps until then)."""
        memory = agent.memory
        with self._cond:
            self._last_step = time.monotonic()
            self._steps += 1
            if not self._running and self.config.every and memory.state.turns - self._turns >= self.config.every:
                self._cond.notify_all()
            elif self.config.idle is not None and self._nothing:  # the worker sleeps for good: set its alarm
                self._nothing = False
                self._cond.notify_all()

    def wait(self, timeout: float | None = None) -> bool:
        """Run now on whatever messages wait (due or not: every batch up to the newest message),
        and return once those runs are applied or one failed (see :attr:`errors`). Call it
        between steps, not from inside one (the runs need :attr:`Agent.lock`). False if
        ``timeout`` seconds passed first."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            self._forced += 1
            self._cond.notify_all()
            while self._forced and not self._stopping:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    @property
    def running(self) -> bool:
        """Whether a run is in flight (reading its batch, asking the LLM or applying)."""
        with self._cond:
            return self._running

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the worker: a run in flight, or else one due by count (``every`` turns since the
        last), finishes (its LLM call, then its apply) first, unless ``timeout`` seconds pass (the
        worker then stops at its next look, and applies nothing once the memory is closed); unhook
        from the agent. So a chat that ends right after a due turn still has that run."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout)
        if self._stepped in self.agent.after_step:
            self.agent.after_step.remove(self._stepped)

    def __enter__(self) -> "ConsolidationDaemon":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ the worker thread

    def _due(self) -> bool:
        """Whether to read a batch now (called holding agent.lock and the condition)."""
        memory = self.agent.memory
        self._taken = max(self._taken, memory.consolidation_cursor)  # a run applied by someone else
        self._nothing = memory.stats.recall <= self._taken
        if self._nothing:
            self._forced = 0  # nothing waits: a wait() is answered
            return False
        if self._forced or self._full:
            return True
        idle = self.config.idle
        return bool((self.config.every and memory.state.turns - self._turns >= self.config.every)
                    or (idle is not None and time.monotonic() - self._last_step >= idle))

    def _due_by_count(self) -> bool:
        return bool(self.config.every) and self.agent.memory.state.turns - self._turns >= self.config.every

    def _sleep(self) -> float | None:
        idle = self.config.idle
        if idle is None or self._nothing:  # only a step brings new messages: sleep until one ends
            return None
        return max(0.01, idle - (time.monotonic() - self._last_step))

    def ready(self) -> bool:
        """Whether no run is in flight and no wait() is pending."""
        with self._cond:
            return not self._running and not self._forced

    def _work(self) -> None:
        while True:
            with self._cond:
                if self._stopping:  # a run due by count when stop() came is made, then no more
                    if self._last_run or not self._due_by_count():
                        return
                    self._last_run = True
            batch = self._read()
            if batch is None:
                with self._cond:  # nothing due: sleep until a run is due by count, wait() asks, or idle time
                    if not self._forced and not self._stopping and not self._due_by_count():
                        sleep = self._sleep()  # at most POLL: a wake-up lost to a race costs a second
                        self._cond.wait(POLL if sleep is None else min(sleep, POLL))
                continue
            read, t = self._read_seconds, time.perf_counter()
            try:
                answer = ask(batch, self.driver, checks=self.config.checks, picks=self.config.picks,
                             lookup=self._lookup)
            except Exception as exc:  # noqa: BLE001 - a DriverError or a bug: dropped, its turns read again
                self._failed(f"the daemon's LLM call failed ({type(exc).__name__}: {exc})", batch)
                with self._cond:
                    self._cond.wait(1.0)  # no hot loop on a server that is down
                continue
            asked = time.perf_counter() - t
            report = None
            for attempt in range(BUSY_TRIES):
                busy = False
                with self.agent.lock:
                    if self.agent.memory.closed:
                        return
                    t = time.perf_counter()
                    try:
                        report = apply(self.agent.memory, batch, answer)
                    except BusyError as exc:  # another caller's moment with the memory: apply again shortly
                        busy = attempt + 1 < BUSY_TRIES
                        if not busy:
                            self._failed(f"apply failed ({type(exc).__name__}: {exc}); nothing was changed", batch)
                    except StaleBatch as exc:
                        self._failed(f"stale batch dropped: {exc}", batch)
                    except Exception as exc:  # noqa: BLE001 - the run rolled back; the agent goes on
                        self._failed(f"apply failed ({type(exc).__name__}: {exc}); nothing was changed", batch)
                if not busy:
                    break
                time.sleep(0.05)
            if report is None:
                continue
            report.seconds = {"read": read, "ask": asked, "apply": time.perf_counter() - t}
            with self._cond:
                self.reports.append(report)
                self._running = False  # a wait() is answered once the next look finds nothing waiting
                self._cond.notify_all()

    def _lookup(self, text: str) -> list[KnownFact]:
        """The current facts most like ``text``, read between steps (holding agent.lock for a search)."""
        with self.agent.lock:
            memory = self.agent.memory
            return [] if memory.closed else list(facts_like(memory.store)(text))

    def _read(self) -> Batch | None:
        """The next batch if a run is due (holding agent.lock briefly), else None."""
        with self.agent.lock:
            memory = self.agent.memory
            if memory.closed:
                with self._cond:
                    self._stopping = True
                    self._cond.notify_all()
                return None
            with self._cond:
                if not self._due():
                    self._cond.notify_all()
                    return None
                start, turns = self._taken, memory.state.turns
            t = time.perf_counter()
            try:
                batch = take_batch(memory.store, start, max_chars=self.config.max_chars)
            except Exception as exc:  # noqa: BLE001
                self.errors.append(f"reading the batch failed ({type(exc).__name__}: {exc})")
                with self._cond:
                    self._forced = 0
                    self._cond.notify_all()
                return None
            self._read_seconds = time.perf_counter() - t
            if batch is None:
                return None
            with self._cond:
                self._running = True
                self._taken, self._turns = batch.end, turns
                self._full = batch.end < memory.stats.recall
        return batch

    def _failed(self, why: str, batch: Batch) -> None:
        with self._cond:
            self.errors.append(why)
            self._running = False
            self._full = False
            self._forced = 0
            self._taken = batch.start  # the same turns, next time
            self._cond.notify_all()
