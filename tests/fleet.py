"""A fleet of worker processes serving many agents from one PostgreSQL database, killed at random.

    python tests/fleet.py worker DSN AGENTS WORKER_ID SECONDS SEED PREFIX [SLOT/WORKERS]   (prints "ack AGENT TEXT")
    python tests/fleet.py run DSN --agents 200 --workers 4 --seconds 60 --kill-every 1.0 [--route sticky] [--json]

``run`` creates ``AGENTS`` agents (``fleet-0`` ...), starts ``WORKERS`` workers and, for
``SECONDS``, SIGKILLs a random worker every ``KILL_EVERY`` seconds on average and starts a new
one in its place (``--kill-every 0``: no kills, the fleet's steady throughput). Each worker keeps an LRU of open memories (:class:`vmem.kernel.OpenMemories`)
and steps agents with a scripted driver: any agent chosen at random (``--route random``, the
default: most steps find their agent last changed by another worker, so the memory reloads), or,
as a load balancer that routes by agent would, only the agents of its slot (``--route sticky``:
agent ``i`` goes to slot ``i % WORKERS``; a restarted worker takes over its slot); a user message is unique in the
fleet (``w<worker>-<n>``) and acknowledged on stdout once its step returned (committed). A
step that finds its agent locked by another worker beyond the wait is retried on another agent.

Afterwards every agent is reopened and checked: ``Memory.check()`` passes, every acknowledged
message is in its agent's recall storage exactly once, no message is in two agents or twice
in one (no step applied twice), and the conversation goes on. The counts are returned (and
printed as JSON with ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from kernel_helpers import ChattyPolicy  # noqa: E402
from vmem.kernel import Agent, Memory, MemoryConfig, OpenMemories  # noqa: E402
from vmem.kernel.drivers import ScriptedDriver  # noqa: E402
from vmem.storage import StoreLockedError  # noqa: E402

CONFIG = MemoryConfig(window=4096, reserve_output=512)


def agent_url(dsn: str, i: int, prefix: str = "fleet") -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}agent={prefix}-{i}"


def worker(dsn: str, agents: int, wid: str, seconds: float, seed: int, prefix: str,
           slot: tuple[int, int] | None = None) -> int:
    rng = random.Random(seed)
    mine = list(range(agents)) if slot is None else list(range(slot[0], agents, slot[1]))
    policy = ChattyPolicy()
    drivers: dict[int, Agent] = {}
    deadline = time.monotonic() + seconds
    n = 0
    with OpenMemories(max_open=max(16, agents), durability="normal") as memories:
        while time.monotonic() < deadline:
            i = rng.choice(mine)
            text = f"w{wid}-{n}"
            try:
                with memories.use(agent_url(dsn, i, prefix)) as memory:
                    agent = drivers.get(id(memory))
                    if agent is None or agent.memory is not memory:
                        agent = drivers[id(memory)] = Agent(memory, ScriptedDriver(policy, record=False))
                    agent.step(text)
            except StoreLockedError:
                continue  # another worker held that agent beyond the wait: take another
            print(f"ack {i} {text}", flush=True)
            n += 1
    return 0


def _read(proc: subprocess.Popen[str], acks: list[tuple[int, str]], times: list[float],
          lock: threading.Lock) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("ack "):
            _, i, text = line.split()
            with lock:
                acks.append((int(i), text))
                times.append(time.monotonic())


def run(dsn: str, *, agents: int, workers: int, seconds: float, kill_every: float, seed: int = 1,
        prefix: str | None = None, route: str = "random") -> dict[str, Any]:
    """Run the fleet (see the module docstring) and check every agent; returns the counts.
    Raises AssertionError naming what does not hold."""
    if route not in ("random", "sticky"):
        raise ValueError(f"route must be 'random' or 'sticky', got {route!r}")
    prefix = prefix or f"fleet{os.getpid()}x{seed}"
    for i in range(agents):
        Memory.create(agent_url(dsn, i, prefix), system="s", blocks={"human": ""}, config=CONFIG).close()
    rng = random.Random(seed)
    acks: list[tuple[int, str]] = []
    times: list[float] = []  # when each ack arrived
    lock = threading.Lock()
    procs: list[subprocess.Popen[str]] = []
    readers: list[threading.Thread] = []
    started = 0

    def start(slot: int) -> subprocess.Popen[str]:
        nonlocal started
        started += 1
        routed = [f"{slot}/{workers}"] if route == "sticky" else []
        p = subprocess.Popen([sys.executable, __file__, "worker", dsn, str(agents), str(started),
                              str(max(1.0, deadline - time.monotonic())), str(rng.randrange(1 << 30)), prefix,
                              *routed],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t = threading.Thread(target=_read, args=(p, acks, times, lock), daemon=True)
        t.start()
        readers.append(t)
        return p

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    deadline = t0 + seconds
    live = [start(slot) for slot in range(workers)]
    procs.extend(live)
    kills = 0
    if kill_every <= 0:
        time.sleep(max(0.0, deadline - time.monotonic()))
    while kill_every > 0 and time.monotonic() < deadline - 0.5:
        time.sleep(min(rng.expovariate(1 / kill_every), max(0.0, deadline - 0.5 - time.monotonic())))
        if time.monotonic() >= deadline - 0.5:
            break
        victim = rng.randrange(len(live))
        os.kill(live[victim].pid, signal.SIGKILL)
        live[victim].wait()
        kills += 1
        live[victim] = start(victim)
        procs.append(live[victim])
    errors = []
    for p in live:
        try:
            p.wait(timeout=max(60.0, seconds))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if p.returncode != 0:
            errors.append((p.returncode, p.stderr.read()[-2000:] if p.stderr else ""))
    elapsed = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers' CPU (waited for: all of them)
    worker_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    for t in readers:
        t.join(10)
    for p in procs:
        for f in (p.stdout, p.stderr):
            if f is not None:
                f.close()
    assert not errors, errors[:2]
    acked_by_agent: dict[int, list[str]] = {}
    for i, text in acks:
        acked_by_agent.setdefault(i, []).append(text)
    seen: Counter[str] = Counter()
    lost = failures = 0
    for i in range(agents):
        url = agent_url(dsn, i, prefix)
        with Memory.open(url) as m:
            try:
                m.check()
                page = m.store.recall.search(None, roles=["user"], page_size=1000)
                assert page.total < 1000
                here = Counter(h.item.content for h in page.hits)
                Agent(m, ScriptedDriver(ChattyPolicy())).step("after the fleet")  # it goes on
                m.check()
            except Exception:  # noqa: BLE001 - counted, reported
                failures += 1
                continue
        seen.update(here)
        lost += sum(1 for text in acked_by_agent.get(i, []) if here[text] != 1)
    duplicated = sum(n - 1 for n in seen.values() if n > 1)  # twice in one agent, or in two
    counts = {"agents": agents, "workers": workers, "route": route, "seconds": round(elapsed, 1), "kills": kills,
              "acknowledged": len(acks), "steps_per_second": round(len(acks) / elapsed, 1),
              # the second half only: every worker has opened its agents (without kills: the steady rate)
              "steps_per_second_second_half": round(
                  sum(1 for t in times if t0 + seconds / 2 <= t < t0 + seconds) / (seconds / 2), 1),
              "worker_cpu_ms_per_step": round(1e3 * worker_cpu / max(1, len(acks)), 2),  # start-up included
              "committed_unacknowledged": sum(seen.values()) - len(acks),  # killed after COMMIT, before the ack
              "lost": lost, "duplicated": duplicated, "invariant_failures": failures}
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("worker")
    w.add_argument("dsn")
    w.add_argument("agents", type=int)
    w.add_argument("wid")
    w.add_argument("seconds", type=float)
    w.add_argument("seed", type=int)
    w.add_argument("prefix")
    w.add_argument("slot", nargs="?", help="SLOT/WORKERS: serve only the agents i with i %% WORKERS == SLOT")
    r = sub.add_parser("run")
    r.add_argument("dsn", help="postgresql://user@host/db (the agents are created there)")
    r.add_argument("--agents", type=int, default=200)
    r.add_argument("--workers", type=int, default=4)
    r.add_argument("--seconds", type=float, default=60.0)
    r.add_argument("--kill-every", type=float, default=1.0,
                   help="mean seconds between SIGKILLs of a random worker (0: no kills; default 1.0)")
    r.add_argument("--seed", type=int, default=1)
    r.add_argument("--route", choices=["random", "sticky"], default="random",
                   help="which worker steps an agent: any (random) or the one of its slot (sticky)")
    r.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.cmd == "worker":
        slot = tuple(int(x) for x in args.slot.split("/")) if args.slot else None
        return worker(args.dsn, args.agents, args.wid, args.seconds, args.seed, args.prefix, slot)  # type: ignore[arg-type]
    counts = run(args.dsn, agents=args.agents, workers=args.workers, seconds=args.seconds,
                 kill_every=args.kill_every, seed=args.seed, route=args.route)
    print(json.dumps(counts) if args.json else "\n".join(f"{k}: {v}" for k, v in counts.items()))
    return 0 if not (counts["lost"] or counts["duplicated"] or counts["invariant_failures"]) else 1


if __name__ == "__main__":
    sys.exit(main())
