#!/usr/bin/env python3
"""Kernel overhead per step: everything but the LLM call, beside a pure-Python kernel in the same run.

The scene: an agent with a 128k-token window, 2,000 messages in its FIFO queue
and 100,000 passages in archival storage (inserted once per run with
``insert_many`` and the built-in embedder; the queue is filled by real steps).
That state is saved once and copied for every measured series, so each series
starts from the same memory.

A step is ``Agent.step(user message)``: the user message enters recall storage
and the queue, memory pressure is checked, the context is compiled and the
driver exchange traced, the completion's memory functions run, and the state is
persisted. The driver is a ScriptedDriver with precomputed completions (mostly
``send_message``; every 10th step also ``archival_memory_insert``, another 10th
``core_memory_append``); its time (it deep-copies every request it records) is
measured and subtracted, so the figures are kernel time only. There is no query
embedding in these steps (no search).

Series:

- ``normal`` and ``full`` durability: p50/p99 kernel time per step. ``full``
  fsyncs every commit and a step commits 4-5 times (user message, assistant
  message, tool results, state), so it measures the disk as much as the kernel.
- flush: the driver answers one step with ContextOverflowError; the kernel
  evicts half the queue behind a summary. The flush's own time is measured
  inside the kernel's flush (eviction planning, transcript and chunking,
  removal, bookkeeping); the summary call is the scripted driver's and is
  excluded.
- baseline: ``PythonKernel`` (python_kernel.py) does the same step as a
  competent Python programmer would without the C core: counts cached per
  message (the same estimator), a running total, a linear eviction scan that
  stops when enough is freed, the same memory functions on the same kind of
  store, one transaction per step with its state and trace events. Its
  archival store is empty (it only inserts), which favours it.

    .venv/bin/python bench/bench_kernel.py             # 100,000 passages, 300 steps per series
    .venv/bin/python bench/bench_kernel.py --quick     # 10,000 passages, 60 steps: under a minute
    .venv/bin/python bench/bench_kernel.py --json      # figures as JSON (bench/figures.py)
    .venv/bin/python bench/bench_kernel.py --profile   # also cProfile a normal series, top functions

Targets (kernel per step, durability normal): p50 <= 1 ms, p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Generator, Iterator

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # figures.py

from figures import Figure, emit  # noqa: E402
from python_kernel import (  # noqa: E402
    naive_scene,
    run_naive_flush,
    run_naive_steps,
)
from vmem.kernel import Agent, read_trace  # noqa: E402
from vmem.kernel.drivers import (  # noqa: E402
    Completion,
    ContextOverflowError,
    ScriptedDriver,
    ToolCall,
)
from workload import (  # noqa: E402
    CONFIG,
    HUMAN_LIMIT,
    PERSONA,
    RULES,
    SYSTEM,
    Responder,
    TextGen,
    TimedDriver,
    step_completions,
    user_messages,
)

from vmem import Region  # noqa: E402

TARGET_P50_MS = 1.0
TARGET_P99_MS = 5.0
def timed_generator(gen: Generator[Any, Any, Any], box: list[float]) -> Generator[Any, Any, Any]:
    """Re-yield ``gen``'s requests and pass answers back, adding the time spent running
    ``gen`` itself (not its caller, not the driver) to ``box[0]``; returns ``gen``'s value."""
    clock = time.perf_counter
    t = clock()
    try:
        request = next(gen)
    except StopIteration as stop:
        box[0] += clock() - t
        return stop.value
    box[0] += clock() - t
    while True:
        try:
            reply = yield request
        except BaseException as exc:  # thrown in by the caller: pass it on
            t = clock()
            try:
                request = gen.throw(exc)
            except StopIteration as stop:
                box[0] += clock() - t
                return stop.value
            box[0] += clock() - t
            continue
        t = clock()
        try:
            request = gen.send(reply)
        except StopIteration as stop:
            box[0] += clock() - t
            return stop.value
        box[0] += clock() - t


#: The step's phases: label -> the methods (dotted paths from the Agent) that do them, first one
#: present wins (a phase whose methods are all gone reads 0). "memory.store.transaction" is
#: MemoryDir.transaction: BEGIN/COMMIT; "memory.transaction" the rollback marks around it.
PHASES: dict[str, tuple[str, ...]] = {
    "trace: request digest + record": ("_log",),
    "prepare: prefetch, pressure": ("memory.prepare",),
    "compile the context (+ its digest)": ("memory.compile",),
    "recall append + queue accounting": ("memory._enqueue",),
    "run memory functions": ("memory.execute",),
    "answer bookkeeping": ("_record",),
    "persist: state + core journal": ("memory._tx._persist",),
    "transactions: BEGIN/COMMIT": ("memory.store.transaction",),
    "transactions: rollback marks": ("memory.transaction",),
}


class Phases:
    """Exclusive time per phase of the step, on one agent.

    Each phase's method is shadowed on the instance (the class is untouched) by a
    timing wrapper; a phase called inside another is subtracted from the outer
    one, so every microsecond is counted once, under the innermost phase.
    """

    def __init__(self, agent: Agent) -> None:
        self.total: dict[str, float] = {label: 0.0 for label in PHASES}
        self.step: dict[str, float] = dict(self.total)
        self._children: list[float] = []  # time spent in nested phases, per open phase
        for label, names in PHASES.items():
            for name in names:
                *owners, attr = name.split(".")
                target: Any = agent
                for owner in owners:
                    target = getattr(target, owner)
                method = getattr(target, attr, None)
                if method is None:
                    continue
                wrap = self._wrap_cm if attr == "transaction" else self._wrap_gen if attr == "prepare" else self._wrap
                setattr(target, attr, wrap(label, method))
                break

    def _done(self, label: str, elapsed: float) -> None:
        own = elapsed - self._children.pop()
        self.total[label] += own
        self.step[label] += own
        if self._children:
            self._children[-1] += elapsed

    def _wrap(self, label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._children.append(0.0)
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._done(label, time.perf_counter() - t)
        return timed

    def _wrap_gen(self, label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
            box = [0.0]
            self._children.append(0.0)
            try:
                return (yield from timed_generator(method(*args, **kwargs), box))
            finally:
                self._done(label, box[0])
        return timed

    def _wrap_cm(self, label: str, method: Callable[..., Any]) -> Callable[..., Any]:
        """Times entering and leaving the context manager (BEGIN, COMMIT, marks), not its body."""
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            cm = method(*args, **kwargs)
            self._children.append(0.0)
            t = time.perf_counter()
            value = cm.__enter__()
            self._done(label, time.perf_counter() - t)
            try:
                yield value
            except BaseException:
                self._children.append(0.0)
                t = time.perf_counter()
                try:
                    if not cm.__exit__(*sys.exc_info()):
                        raise
                finally:
                    self._done(label, time.perf_counter() - t)
            else:
                self._children.append(0.0)
                t = time.perf_counter()
                cm.__exit__(None, None, None)
                self._done(label, time.perf_counter() - t)
        return contextlib.contextmanager(timed)

    def start_step(self) -> None:
        self.step = {label: 0.0 for label in PHASES}


# --------------------------------------------------------------------------- the scene


def progress_bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, file=sys.stderr)


def build_scene(path: Path, passages: int, messages: int, batch: int, progress: bool) -> dict[str, Any]:
    """Create the agent (durability normal), insert the passages, fill the queue; close it."""
    fill = Responder([Completion(tool_calls=[ToolCall(f"f{i}", "send_message", {"message": text})])
                      for i, text in enumerate(user_messages(64, seed=2))])
    agent = Agent.create(path, system=SYSTEM, blocks={"persona": PERSONA, "human": {"value": "", "limit": HUMAN_LIMIT}},
                         driver=ScriptedDriver(fill), config=CONFIG, rules=RULES, durability="normal")
    memory = agent.memory
    try:
        gen = TextGen(1)
        bar = progress_bar(passages, "archival passages", progress)
        t = time.perf_counter()
        for start in range(0, passages, batch):
            n = min(batch, passages - start)
            memory.archival_insert_many([gen.text(2, start + k) for k in range(n)])
            if bar is not None:
                bar.update(n)
        insert_s = time.perf_counter() - t
        if bar is not None:
            bar.close()
        texts = user_messages(messages // 3 + 8, seed=3)
        bar = progress_bar(messages, "queue messages", progress)
        i = 0
        while (queued := len(memory.queue)) < messages:
            agent.step(texts[i % len(texts)])
            i += 1
            if bar is not None:
                bar.update(len(memory.queue) - queued)
        if bar is not None:
            bar.close()
        status = memory.ctx.status()
        info = {"passages": len(memory.store.archival), "queue": len(memory.queue),
                "used": status.used, "budget": status.budget, "insert_s": insert_s,
                "queue_tokens": memory.ctx.stats().tokens[Region.QUEUE]}
    finally:
        agent.close()
    return info


def fork(scene: Path, into: Path) -> Path:
    """A copy of the saved scene (so every series starts from the same memory)."""
    if into.exists():
        shutil.rmtree(into)
    shutil.copytree(scene, into, ignore=shutil.ignore_patterns("lock"))
    return into


@dataclass
class Series:
    """Kernel seconds per step of one series, and what happened during it."""

    name: str
    kernel_s: list[float] = field(default_factory=list)
    driver_s: list[float] = field(default_factory=list)
    alerts: int = 0
    flushes: int = 0  #: steps with a flush (left out of kernel_s)

    def p(self, q: float) -> float:
        return float(np.percentile(self.kernel_s, q))


def run_steps(path: Path, name: str, durability: str, steps: int, seed: int,
              profile: cProfile.Profile | None = None, phases: list[dict[str, float]] | None = None) -> Series:
    """Open the forked scene and time ``steps`` steps; kernel time = step time - driver time.

    ``profile``: a cProfile enabled around each step. ``phases``: a list that receives,
    per step, the seconds of each phase of :data:`PHASES` and ``kernel`` (instrumented run).
    """
    responder = Responder(step_completions(steps, seed))
    driver = TimedDriver(ScriptedDriver(responder))
    texts = user_messages(steps, seed + 1000)
    out = Series(name)
    agent = Agent.open(path, driver=driver, rules=RULES, durability=durability)
    try:
        agent.step("Warming up: hello again.")  # first-use costs (statement cache, page cache) out of the figures
        timer = Phases(agent) if phases is not None else None
        for text in texts:
            if timer is not None:
                timer.start_step()
            before = driver.seconds
            if profile is not None:
                profile.enable()
            t = time.perf_counter()
            result = agent.step(text)
            wall = time.perf_counter() - t
            if profile is not None:
                profile.disable()
            dt = driver.seconds - before
            out.alerts += result.alerts
            if result.flushes:
                out.flushes += 1
                continue
            out.kernel_s.append(wall - dt)
            out.driver_s.append(dt)
            if timer is not None and phases is not None:
                phases.append({**timer.step, "kernel": wall - dt})
    finally:
        agent.close()
    return out


@dataclass
class FlushSample:
    flush_s: float  #: inside the kernel's flush, summary call excluded
    step_s: float  #: the whole step that flushed, driver excluded
    evicted: int
    queue_before: int


def run_flush(path: Path, durability: str) -> FlushSample:
    """One forced flush (the provider says the prompt is too long) of the forked scene's queue."""
    responder = Responder([ContextOverflowError("prompt is too long"), *step_completions(1, 9)])
    driver = TimedDriver(ScriptedDriver(responder))
    agent = Agent.open(path, driver=driver, rules=RULES, durability=durability)
    try:
        box = [0.0]
        # the flush is timed from inside the queue manager: the instance attribute shadows the method
        manager = agent.memory.pressure
        if not callable(getattr(manager, "_flush", None)):
            raise RuntimeError("bench_kernel: QueueManager._flush (the flush generator this bench times) is gone; "
                               "update run_flush to the kernel's new flush entry point")
        flush = manager._flush
        manager._flush = lambda room, forced: timed_generator(flush(room, forced), box)  # type: ignore[method-assign]
        before = len(agent.memory.queue)
        t = time.perf_counter()
        result = agent.step("Let us continue where we left off.")
        wall = time.perf_counter() - t
        if result.flushes != 1:
            raise RuntimeError(f"expected one flush, got {result.flushes}")
    finally:
        agent.close()
    evicted = [len(e["evicted"]) for e in read_trace(path) if e["e"] == "flush"][-1]
    return FlushSample(box[0], wall - driver.seconds, evicted, before)


# --------------------------------------------------------------------------- report


def profile_text(profile: cProfile.Profile, top: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def phase_text(phases: list[dict[str, float]], slowest: int = 8) -> str:
    """Mean time per phase (durability normal, instrumented run), and the slowest steps by phase."""
    kernel = float(np.mean([p["kernel"] for p in phases]))
    lines = [f"where a step's kernel time goes (mean of {len(phases)} steps, {1e3 * kernel:.3f} ms, durability normal):"]
    for label in PHASES:
        v = float(np.mean([p[label] for p in phases]))
        lines.append(f"  {label:36} {1e3 * v:8.3f} ms  {100 * v / kernel:5.1f}%")
    rest = kernel - sum(float(np.mean([p[label] for p in phases])) for label in PHASES)
    lines.append(f"  {'everything else':36} {1e3 * rest:8.3f} ms  {100 * rest / kernel:5.1f}%")
    lines.append("slowest steps (kernel ms: the phases over 0.5 ms):")
    for p in sorted(phases, key=lambda p: -p["kernel"])[:slowest]:
        parts = ", ".join(f"{label.split(':')[0]} {1e3 * p[label]:.2f}" for label in PHASES if p[label] > 5e-4)
        lines.append(f"  {1e3 * p['kernel']:7.2f}: {parts}")
    return "\n".join(lines)


def figures(series: dict[str, Series], flushes: list[FlushSample], naive_steps: list[float],
            naive_flush: list[float]) -> list[Figure]:
    out: list[Figure] = []
    naive_p50 = float(np.median(naive_steps)) if naive_steps else None
    for durability in ("normal", "full"):
        s = series.get(durability)
        if s is None or not s.kernel_s:
            continue
        p50, p99 = s.p(50), s.p(99)
        base = naive_p50 if durability == "normal" else None
        out.append(Figure.timed(f"kernel step p50, 128k window, durability {durability}", p50, base, unit="ms",
                                target=f"<= {TARGET_P50_MS:g} ms", met=p50 * 1e3 <= TARGET_P50_MS))
        out.append(Figure.timed(f"kernel step p99, 128k window, durability {durability}", p99, unit="ms",
                                target=f"<= {TARGET_P99_MS:g} ms", met=p99 * 1e3 <= TARGET_P99_MS))
    if flushes:
        f = float(np.median([x.flush_s for x in flushes]))
        base = float(np.median(naive_flush)) if naive_flush else None
        evicted = int(np.median([x.evicted for x in flushes]))
        out.append(Figure.timed(f"flush of half the queue ({evicted} of {flushes[0].queue_before} messages), "
                                f"summary call excluded", f, base, unit="ms"))
        out.append(Figure.timed("step with a flush, driver excluded", float(np.median([x.step_s for x in flushes])),
                                unit="ms"))
    if naive_p50 is not None:
        out.append(Figure.timed("pure-Python kernel step p50 (cached counts, running total, linear plan)", naive_p50,
                                unit="ms"))
    return out


def report(info: dict[str, Any], series: dict[str, Series], flushes: list[FlushSample], naive_steps: list[float],
           naive_flush: list[float]) -> str:
    lines = [f"scene: {info['passages']:,} archival passages (inserted in {info['insert_s']:.1f} s), "
             f"{info['queue']:,} queue messages ({info['queue_tokens']:,} tokens); context {info['used']:,} of "
             f"{info['budget']:,} budget tokens, window {CONFIG.window:,}"]
    for name, s in series.items():
        if not s.kernel_s:
            continue
        lines.append(f"{name:>7}: {len(s.kernel_s)} steps  kernel p50 {1e3 * s.p(50):.3f} ms  p90 {1e3 * s.p(90):.3f} ms  "
                     f"p99 {1e3 * s.p(99):.3f} ms  max {1e3 * max(s.kernel_s):.3f} ms  (driver p50 "
                     f"{1e3 * float(np.median(s.driver_s)):.3f} ms, subtracted; {s.alerts} alerts, "
                     f"{s.flushes} steps with a flush left out)")
    for x in flushes:
        lines.append(f"  flush: {x.evicted} of {x.queue_before} messages evicted in {1e3 * x.flush_s:.2f} ms "
                     f"(whole step {1e3 * x.step_s:.2f} ms, driver excluded)")
    if naive_steps:
        lines.append(f"  pure-Python kernel: {len(naive_steps)} steps  p50 {1e3 * float(np.median(naive_steps)):.2f} ms; "
                     f"flush {', '.join(f'{1e3 * v:.1f}' for v in naive_flush)} ms")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Kernel overhead per step (everything but the LLM call) for a 128k "
                                            "window, 2,000 queued messages and 100,000 archival passages, beside "
                                            "a pure-Python kernel.")
    p.add_argument("--passages", type=int, default=100_000, help="archival passages (default: %(default)s)")
    p.add_argument("--messages", type=int, default=2_000, help="messages in the queue (default: %(default)s)")
    p.add_argument("--steps", type=int, default=300, help="timed steps per durability (default: %(default)s)")
    p.add_argument("--flushes", type=int, default=3, help="flush samples (default: %(default)s)")
    p.add_argument("--naive-steps", type=int, default=100, help="pure-Python kernel steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=2_000, help="passages per insert_many (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=None, help="where to build the scene (default: a temp dir)")
    p.add_argument("--json", action="store_true", help="print the figures (bench/figures.py shape) as a JSON list")
    p.add_argument("--quick", action="store_true", help="10,000 passages, 60 steps, 1 flush, 30 baseline steps")
    p.add_argument("--profile", action="store_true", help="also cProfile a normal-durability series; print the top")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.quick:
        args.passages, args.steps, args.flushes, args.naive_steps = min(args.passages, 10_000), 60, 1, 30
    progress = not args.no_progress
    log = sys.stderr if args.json else sys.stdout

    with tempfile.TemporaryDirectory(prefix="vmem-bench-kernel-", dir=args.workdir) as tmp:
        root = Path(tmp)
        scene = root / "scene"
        t0 = time.perf_counter()
        info = build_scene(scene, args.passages, args.messages, args.batch, progress)
        print(f"scene built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        series: dict[str, Series] = {}
        for durability in ("normal", "full"):
            series[durability] = run_steps(fork(scene, root / "run"), durability, durability, args.steps, args.seed)
        flushes = [run_flush(fork(scene, root / "run"), "normal") for _ in range(args.flushes)]
        naive = naive_scene(scene, root / "naive", "normal")
        try:
            naive_steps = run_naive_steps(naive, args.naive_steps, args.seed)
        finally:
            naive.close()
        naive_flush = []
        for _ in range(max(1, min(args.flushes, 3))):
            naive = naive_scene(scene, root / "naive", "normal")
            try:
                naive_flush.append(run_naive_flush(naive))
            finally:
                naive.close()
        profiled = None
        phases: list[dict[str, float]] = []
        if args.profile:
            run_steps(fork(scene, root / "run"), "phases", "normal", args.steps, args.seed, phases=phases)
            profiled = cProfile.Profile()
            run_steps(fork(scene, root / "run"), "profile", "normal", args.steps, args.seed, profiled)
    print(report(info, series, flushes, naive_steps, naive_flush), file=log)
    if phases:
        print(phase_text(phases), file=log)
    if profiled is not None:
        print(profile_text(profiled), file=log)
    emit(figures(series, flushes, naive_steps, naive_flush), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
