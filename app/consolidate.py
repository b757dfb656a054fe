"""``vmem consolidate``: the consolidation daemon as its own process, over an agent's directory.

Interface::

    from vmem.app.consolidate import run_once, run_loop
    report = run_once("agent-dir", driver)                       # one run (None: nothing new)
    runs = run_loop("agent-dir", driver, every=5, idle=30.0,      # until stopped, max_runs or idle
                    max_runs=None, until_idle=False, on_report=print)

How it shares the store with the agent (the SQLite store takes one writer at a time, under
a lock): a run reads the new turns from a read-only open (no lock: the agent may be
stepping), calls the LLM holding no lock (the read-only open then finds the stored facts each
new one may replace, for the yes/no calls), and only then opens the memory for writing,
waiting up to ``lock_timeout`` seconds for the lock (another writer: ``vmem chat``, an MCP
server that holds it, another daemon), applies the checked proposals in one transaction and
closes it at once. If the lock does not come, the run's answer is dropped and its turns are
read again next time; if another run moved the cursor meanwhile, the batch is stale and
nothing is applied. A process that holds the store for its whole life (``vmem chat``) leaves
this daemon waiting: run the daemon in that process instead
(:class:`vmem.kernel.daemon.ConsolidationDaemon`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vmem import PageKind, make_page_id
from vmem.kernel import Memory
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
from vmem.kernel.persistence import load_state
from vmem.storage import MemoryDir, StoreLockedError

__all__ = ["pending", "run_loop", "run_once"]


def pending(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(messages, user turns)`` stored after the consolidation cursor, as committed now (read-only)."""
    with MemoryDir.open(path, create=False, read_only=True) as store:
        cursor = load_state(store).consolidated
        last = len(store.recall)
        first = max(cursor + 1, last - 499)  # the user turns among the last 500 (more: due anyway)
        users = sum(1 for m in store.recall.get_many(make_page_id(PageKind.MESSAGE, s) for s in range(first, last + 1))
                    if m.role == "user")
        return last - cursor, users


def _open_writer(path: Path, lock_timeout: float) -> Memory:
    deadline = time.monotonic() + lock_timeout
    delay = 0.02
    while True:
        try:
            return Memory.open(path)
        except StoreLockedError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 0.5)


def run_once(path: str | os.PathLike[str], driver: Driver, *, lock_timeout: float = 10.0, checks: int = CHECKS,
             picks: int = PICKS, max_chars: int = MAX_BATCH_CHARS) -> RunReport | None:
    """One run over the memory in ``path`` (see the module docstring); None when no message waits.
    StoreLockedError when the lock did not come within ``lock_timeout`` (nothing applied)."""
    path = Path(path)
    with MemoryDir.open(path, create=False, read_only=True) as store:  # read-only: no writer waits for the model
        batch = take_batch(store, load_state(store).consolidated, max_chars=max_chars)
        if batch is None:
            return None
        answer = ask(batch, driver, checks=checks, picks=picks, lookup=facts_like(store))
    with _open_writer(path, lock_timeout) as memory:
        try:
            return apply(memory, batch, answer)
        except StaleBatch:
            return RunReport(batch.start, batch.start, messages=0, stale=True)


def run_loop(path: str | os.PathLike[str], driver: Driver, *, every: int = 5, idle: float | None = 30.0,
             interval: float = 1.0, max_runs: int | None = None, until_idle: bool = False,
             lock_timeout: float = 10.0, checks: int = CHECKS, picks: int = PICKS, max_chars: int = MAX_BATCH_CHARS,
             on_report: Callable[[RunReport], Any] | None = None,
             on_error: Callable[[BaseException], Any] | None = None) -> int:
    """Run whenever it is due, until ``max_runs`` runs were made or, with ``until_idle``, nothing
    waits; returns the runs made. Due: ``every`` user turns wait, or messages wait and the store
    has not changed for ``idle`` seconds. Polls every ``interval`` seconds. A run that could
    not get the lock or whose LLM call failed is reported to ``on_error`` and tried again (with
    ``until_idle``, or without ``on_error``, it raises)."""
    runs = 0
    seen, since = -1, time.monotonic()
    while max_runs is None or runs < max_runs:
        messages, users = pending(path)
        if messages != seen:
            seen, since = messages, time.monotonic()
        quiet = idle is not None and time.monotonic() - since >= idle
        if messages and (until_idle or (every and users >= every) or quiet):
            try:
                report = run_once(path, driver, lock_timeout=lock_timeout, checks=checks, picks=picks,
                                  max_chars=max_chars)
            except Exception as exc:  # noqa: BLE001 - the lock, the server: reported, tried again
                if on_error is None or until_idle:
                    raise
                on_error(exc)
                time.sleep(interval)
                continue
            if report is not None:
                runs += 1
                if on_report is not None:
                    on_report(report)
            continue
        if until_idle and not messages:
            break
        time.sleep(interval)
    return runs
