#!/usr/bin/env python3
"""The kernel's page faults and its prefetch step at 10k / 100k / 1M pages, beside the paths below them.

This times what an agent's user waits for, through the kernel's own calls:

- page fault ``archival_memory_search``: ``Memory.execute`` of the tool call the LLM
  made (function lookup, argument check, savepoint, the hybrid search, page-in of the
  hits into the working set through the C core, the result text, the tool message
  queued, the trace event). The agent runs a call inside its step's transaction, and so
  does this bench: each fault runs in an open transaction that is then rolled back
  (untimed), so every question meets the same memory;
- page fault ``conversation_search``: the same, over recall storage;
- the prefetch step: ``Agent.step(question)`` with ``prefetch=2`` (each user message
  pages in the two best archival passages and recall messages before the LLM call),
  scripted completions (mostly ``send_message``, as in bench_kernel.py), driver time
  subtracted, beside the same step of a second agent, on a copy of the same memory,
  with prefetch off. The two agents take turns, question by question.

Beside each fault, in the same process and interleaved question by question (in a seeded
random order per question, so that no path always runs first or always follows the same
one): the store's search alone, raw hnswlib (``knn_query`` of the embedded question over
the store's own graph, k = the page size) and the FTS5 path the stores ran before their
own text index (``count(*)`` over every match, then a ranked page, on an FTS5
``porter unicode61`` table over the same texts).

Scene per size N: a 128k-token agent whose archival storage holds N LoCoMo-like passages
and whose recall storage holds N LoCoMo-like messages, its older history
(``Memory.import_history``). The stores are bench_search.py's (``archival-N``,
``recall-N`` under ``--dir``; built here when missing, the same turns from the same
seed), so the two scripts share the 1M build. Queries and user messages are the LoCoMo
dev questions. The data is read from ``../shared/data/locomo`` (never copied); without
it the script says so and exits 0.

    .venv/bin/python bench/bench_pagefault.py                          # 10k and 100k
    .venv/bin/python bench/bench_pagefault.py --sizes 1000000 --dir /var/tmp/vmem-bench-search
    .venv/bin/python bench/bench_pagefault.py --quick --json           # 10k, 300 questions, 60 steps
    .venv/bin/python bench/bench_pagefault.py --sizes 10000 --embedders minilm --faults-only   # beside MiniLM

Targets (issue 12, 100k pages): archival_memory_search p50 <= 1 ms, p99 <= 3 ms;
conversation_search p50 <= 1 ms, p99 <= 3 ms; the prefetch step p50 <= 2 ms; 1M: hybrid
archival_memory_search p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # figures.py and the bench helpers

from workload import PERSONA, RULES, SYSTEM, Responder, TimedDriver, step_completions  # noqa: E402
from bench_search import (  # noqa: E402
    LOCOMO, TurnGen, build_archival, build_recall, fts5_search, fts5_side_db, locomo_questions,
    percentile_figures,
)
from figures import Figure, emit  # noqa: E402

from vmem.kernel import Agent, Memory, MemoryConfig  # noqa: E402
from vmem.storage import MemoryDir  # noqa: E402
from vmem.kernel.drivers import ScriptedDriver, ToolCall  # noqa: E402

UTC = dt.timezone.utc
PAGE_SIZE = 5  # MemoryConfig's default: results per page of a memory search
CONFIG_ON = MemoryConfig(window=131_072, reserve_output=4_096, prefetch=2, page_size=PAGE_SIZE)
CONFIG_OFF = MemoryConfig(window=131_072, reserve_output=4_096, prefetch=0, page_size=PAGE_SIZE)
#: (p50, p99) targets in seconds per (figure, size).
TARGETS = {
    ("archival", 100_000): (1e-3, 3e-3), ("recall", 100_000): (1e-3, 3e-3),
    ("archival", 1_000_000): (5e-3, None), ("step", 100_000): (2e-3, None),
}


class _Undo(Exception):
    """Raised inside a transaction to roll it back after a timed fault."""


# --------------------------------------------------------------------------- the scene


def build_scene(base: Path, n: int, gen: TurnGen, progress: bool) -> tuple[Path, Path]:
    """Two agents over the same N passages and N recall messages (prefetch on, prefetch off)."""
    arch, rec = base / f"archival-{n}", base / f"recall-{n}"
    build_archival(arch, n, gen, progress=progress)
    build_recall(rec, n, gen, progress=progress)
    out = []
    for name, config in (("on", CONFIG_ON), ("off", CONFIG_OFF)):
        path = base / f"agent-{name}-{n}"
        if not Agent.exists(path):
            shutil.rmtree(path, ignore_errors=True)
            t = time.perf_counter()
            shutil.copytree(arch, path, ignore=shutil.ignore_patterns("lock"))
            memory = Memory.create(path, system=SYSTEM, config=config, durability="normal",
                                   blocks={"persona": PERSONA, "human": {"value": "", "limit": 5_000}})
            try:
                memory.import_history(_recall_rows(rec / "vmem.db"))
            finally:
                memory.close()
            if progress:
                print(f"  agent ({name}) over {n} pages in {time.perf_counter() - t:.0f}s", file=sys.stderr)
        out.append(path)
    return out[0], out[1]


def _recall_rows(db: Path) -> list[tuple[dict[str, str], dt.datetime]]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [({"role": role, "content": content}, dt.datetime.fromtimestamp(ts, UTC))
                for role, content, ts in con.execute("SELECT role, content, ts FROM messages ORDER BY id")]
    finally:
        con.close()


# --------------------------------------------------------------------------- timing


def interleaved(paths: dict[str, Callable[[int, str], Any]], queries: Sequence[str],
                warmup: int = 20, seed: int = 0) -> dict[str, np.ndarray]:
    """Seconds per call of each path, question by question, the paths in a random order per question.

    Random, not rotating: a rotation keeps the cyclic order, so each path would nearly always
    follow the same one, and the FTS5 path, which reads far more memory than the others,
    would leave cold caches to the same path every time (at 1M pages that added ~1.2 ms to
    the page fault's p50)."""
    names = list(paths)
    for i, q in enumerate(queries[:warmup]):
        for name in names:
            paths[name](-1 - i, q)
    out = {name: np.empty(len(queries)) for name in names}
    clock = time.perf_counter
    rng = random.Random(seed)
    for i, q in enumerate(queries):
        order = names[:]
        rng.shuffle(order)
        for name in order:
            t = clock()
            paths[name](i, q)
            out[name][i] = clock() - t
    return out


def fault(memory: Memory, function: str, timings: list[float], failures: list[str]) -> Callable[[int, str], None]:
    """A page fault: the LLM's message with the call appended (untimed), the call executed
    (timed), all inside a transaction that is then rolled back."""
    def run(i: int, q: str) -> None:
        call = ToolCall(f"pf{i}", function, {"query": q})
        with contextlib.suppress(_Undo):
            with memory.transaction():
                memory.append({"role": "assistant", "content": "", "tool_calls": [call.to_openai()]})
                t = time.perf_counter()
                record = memory.execute(call)
                timings.append(time.perf_counter() - t)
                if not record.ok:
                    failures.append(f"{function}({q!r}): {record.result}")
                raise _Undo
    return run


def _figures(name: str, lat: np.ndarray, base: np.ndarray | None, key: tuple[str, int] | None) -> list[Figure]:
    return percentile_figures(name, lat, base, TARGETS.get(key) if key else None)


def with_embedder(path: Path, name: str, progress: bool) -> Path:
    """A copy of the agent at ``path`` whose passages are embedded by the registered embedder
    ``name`` (vmem.local_models; built once, then kept beside it)."""
    from vmem.local_models import make_embedder

    out = path.with_name(f"{path.name}-{name}")
    embedder = make_embedder(name)
    if Agent.exists(out):
        with Memory.open(out, durability="normal") as m:
            if m.store.embedder.name == embedder.name:
                return out
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(path, out, ignore=shutil.ignore_patterns("lock"))
    bar = None

    def tick(done: int, total: int) -> None:
        nonlocal bar
        if bar is None and progress:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="passage", desc=f"embedding with {name}")
        if bar is not None:
            bar.update(done - bar.n)

    t = time.perf_counter()
    MemoryDir.open(out, embedder=embedder, durability="normal", create=False, on_reembed=tick).close()
    if bar is not None:
        bar.close()
    if progress:
        print(f"  {out.name}: re-embedded with {embedder.name} in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return out


def faults(path: Path, n: int, base: Path, questions: list[str], label: str = "") -> list[Figure]:
    """Both page faults beside the store, hnswlib and the FTS5 path, on the prefetch-on agent
    (``label``: the embedder, when it is not the default, in the figures' names)."""
    fts_arch = fts5_side_db(base / f"fts5-archival-{n}.db", "SELECT id, ts, text FROM passages",
                            base / f"archival-{n}" / "vmem.db")
    fts_rec = fts5_side_db(base / f"fts5-recall-{n}.db", "SELECT id, ts, content FROM messages",
                           base / f"recall-{n}" / "vmem.db")
    figs: list[Figure] = []
    failures: list[str] = []
    memory = Memory.open(path, durability="normal")
    try:
        a, r = memory.store.archival, memory.store.recall
        qvec = dict(zip(questions, a.embedder.embed_query(questions)))
        a.index.settle()  # (every add in the graph before the bare hnswlib calls)
        hnsw = a.index._hnsw
        arch_fault: list[float] = []
        rec_fault: list[float] = []
        t = interleaved({
            "fault": fault(memory, "archival_memory_search", arch_fault, failures),
            "store": lambda i, q: a.search(q, mode="hybrid", page_size=PAGE_SIZE),
            "hnsw": lambda i, q: hnsw.knn_query(qvec[q], k=PAGE_SIZE),
            "fts5": lambda i, q: fts5_search(fts_arch, q, PAGE_SIZE),
        }, questions)
        fault_s = np.array(arch_fault[-len(questions):])
        figs += _figures(f"archival_memory_search page fault (hybrid){label}, {n} passages", fault_s, t["fts5"],
                         ("archival", n))
        figs += _figures(f"  the store's hybrid search alone{label}, {n}", t["store"], None, None)
        figs += _figures(f"  baseline: raw hnswlib knn k={PAGE_SIZE}{label}, {n}", t["hnsw"], None, None)
        figs += _figures(f"  baseline: FTS5 path of before (count + top-{PAGE_SIZE}), {n}", t["fts5"], None, None)
        t = interleaved({
            "fault": fault(memory, "conversation_search", rec_fault, failures),
            "store": lambda i, q: r.search(q, page_size=PAGE_SIZE),
            "fts5": lambda i, q: fts5_search(fts_rec, q, PAGE_SIZE),
        }, questions)
        fault_s = np.array(rec_fault[-len(questions):])
        figs += _figures(f"conversation_search page fault, {n} messages", fault_s, t["fts5"], ("recall", n))
        figs += _figures(f"  the store's recall search alone, {n}", t["store"], None, None)
        figs += _figures(f"  baseline: FTS5 path of before (count + top-{PAGE_SIZE}), {n} messages", t["fts5"],
                         None, None)
        memory.check()  # the rolled-back faults left the memory as it was
    finally:
        memory.close()
        fts_arch.close()
        fts_rec.close()
    figs.append(Figure(f"  page faults answered as failed calls, {n}", len(failures), "calls", target="0",
                       met=not failures))
    for f in failures[:5]:
        print("failed:", f, file=sys.stderr)
    return figs


def steps(on: Path, off: Path, n: int, questions: list[str]) -> list[Figure]:
    """The step with prefetch on beside the step with prefetch off, question by question."""
    agents, drivers, kernel = {}, {}, {"on": [], "off": []}
    flushes = {"on": 0, "off": 0}
    paged = 0
    try:
        for name, path in (("on", on), ("off", off)):
            drivers[name] = TimedDriver(ScriptedDriver(Responder(step_completions(len(questions) + 1, seed=5))))
            agents[name] = Agent.open(path, driver=drivers[name], rules=RULES, durability="normal")
            agents[name].step("Hello again; let us pick up where we left off.")  # first-use costs out of the figures
        for i, q in enumerate(questions):
            for name in ("on", "off") if i % 2 == 0 else ("off", "on"):
                driver = drivers[name]
                before = driver.seconds
                t = time.perf_counter()
                result = agents[name].step(q)
                wall = time.perf_counter() - t
                if result.flushes:  # a flush is the kernel bench's figure, not this one's
                    flushes[name] += 1
                    continue
                kernel[name].append(wall - (driver.seconds - before))
                if name == "on":
                    paged += len(result.paged_in)
        for agent in agents.values():
            agent.memory.check()
    finally:
        for agent in agents.values():
            agent.close()
    on_s, off_s = np.array(kernel["on"]), np.array(kernel["off"])
    figs = _figures(f"step with prefetch=2 (128k window, {n} passages + {n} messages), kernel", on_s, off_s,
                    ("step", n))
    figs += _figures(f"  baseline: the same step with prefetch off, {n}", off_s, None, None)
    figs.append(Figure(f"  pages prefetched per step, mean, {n}", round(paged / max(1, len(on_s)), 2), "pages"))
    figs.append(Figure(f"  steps with a flush (left out), {n}", flushes["on"] + flushes["off"], "steps"))
    return figs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--dir", default=None,
                    help="where the stores and agents are built and kept (default: a temporary directory); "
                         "bench_search.py's --dir is reused")
    ap.add_argument("--path", type=Path, default=LOCOMO, help="LoCoMo JSON file")
    ap.add_argument("--steps", type=int, default=300, help="steps per prefetch series")
    ap.add_argument("--quick", action="store_true", help="10,000 pages, 300 questions, 60 steps")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--embedders", nargs="+", default=[], metavar="NAME",
                    help="also time the page faults of a copy of the agent re-embedded by each of these "
                         "(vmem.local_models names: minilm, e5-small), beside the default's, in the same run")
    ap.add_argument("--faults-only", action="store_true", help="skip the prefetch step series")
    args = ap.parse_args(argv)
    if not args.path.is_file():
        print(f"LoCoMo data not found at {args.path}; nothing to measure", file=sys.stderr)
        emit([], args.json)
        return 0
    sizes = [10_000] if args.quick else args.sizes
    questions = locomo_questions(args.path)
    if args.quick:
        questions, args.steps = questions[:300], 60
    progress = not args.json
    tmp = None
    if args.dir:
        base = Path(args.dir)
        base.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="vmem-bench-pagefault-")
        base = Path(tmp.name)
    gen = TurnGen(args.path, seed=args.seed)
    figs: list[Figure] = []
    try:
        for n in sizes:
            on, off = build_scene(base, n, gen, progress)
            others = [(name, with_embedder(on, name, progress)) for name in args.embedders if name != "hash"]
            figs += faults(on, n, base, questions)
            for name, path in others:
                figs += faults(path, n, base, questions, label=f" [{name}]")
            if not args.faults_only:
                figs += steps(on, off, n, questions[: args.steps])
    finally:
        if tmp is not None:
            tmp.cleanup()
    emit(figs, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
