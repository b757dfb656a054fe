#!/usr/bin/env python3
"""MemGPT's nested key-value task on the official data: a multi-hop page-fault workload.

For each chain length L whose orderings file exists, and each of its orderings
(100 per file; 10 with --quick): a fresh agent gets the 140 pairs of record 0 of
``kv-retrieval-140_keys.jsonl.gz`` in archival memory, nested the MemGPT way
(the value of pair idx[j] becomes the key of pair idx[j+1]), and is asked for
the value of the key of pair idx[0]. The scripted lookup policy
(kernel.nested_kv.KVLookupPolicy) plays the LLM: it follows the chain by reading
only the compiled context, so accuracy measures the kernel and its retrieval
(does the search page the right pair in, does the context show it), not a model.

Reported per L: accuracy, page faults (archival searches) per question, and
kernel time per question: the wall time of ``Agent.step`` minus the time spent
inside the driver (the policy and the scripted driver's bookkeeping), i.e.
compile, accounting, searches with their query embedding, page-in,
persistence and the trace. Setting up each agent (inserting the 140 pairs) is
not timed.

    .venv/bin/python bench/nested_kv.py                 # all orderings, L = 1..6
    .venv/bin/python bench/nested_kv.py --quick --json  # 10 orderings per L, figures as JSON

The data (Apache-2.0, from cpacker/MemGPT) is read from ../shared/data/nested_kv/
or --path; when it is absent the script says so and exits 0.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # figures.py, workload.py, nested_kv_task.py

from workload import TimedDriver  # noqa: E402
from figures import Figure, emit  # noqa: E402

from vmem.kernel import Agent, MemoryConfig, StepRules  # noqa: E402
from vmem.kernel.drivers import ScriptedDriver  # noqa: E402
from nested_kv_task import SYSTEM_PROMPT, KVLookupPolicy, NestedKVTask, make_task  # noqa: E402

DEFAULT_PATH = ROOT.parent / "shared" / "data" / "nested_kv"
RECORDS = "kv-retrieval-140_keys.jsonl.gz"
ORDERINGS = "random_orderings_100_samples_140_indices_{levels}_levels.jsonl"


@dataclass
class LevelResult:
    """What the questions of one chain length gave."""

    levels: int
    correct: int = 0
    searches: list[int] = field(default_factory=list)  #: page faults per question
    kernel_s: list[float] = field(default_factory=list)  #: kernel seconds per question
    steps: list[int] = field(default_factory=list)  #: LLM steps per question
    flushes: int = 0
    failures: list[str] = field(default_factory=list)  #: what went wrong, per wrong answer

    @property
    def questions(self) -> int:
        return len(self.searches)


def load_record(path: Path, index: int = 0) -> list[tuple[str, str]]:
    """The ``ordered_kv_records`` of record ``index`` of the gzipped JSONL file."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n == index:
                return [(str(k), str(v)) for k, v in json.loads(line)["ordered_kv_records"]]
    raise IndexError(f"{path} has no record {index}")


def load_orderings(data: Path, wanted: Sequence[int] | None) -> dict[int, list[list[int]]]:
    """The orderings files that exist, by chain length (only ``wanted`` lengths when given)."""
    out: dict[int, list[list[int]]] = {}
    for levels in wanted or range(1, 100):
        path = data / ORDERINGS.format(levels=levels)
        if path.exists():
            out[levels] = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        elif wanted:
            print(f"nested_kv: no orderings file for L = {levels} ({path.name}); skipped", file=sys.stderr)
    return out


def run_question(task: NestedKVTask, workdir: Path, config: MemoryConfig, durability: str) -> dict[str, Any]:
    """Ask one question of a fresh agent; return what it answered and what it cost."""
    driver = TimedDriver(ScriptedDriver(KVLookupPolicy()))
    with Agent.create(workdir, system=SYSTEM_PROMPT, driver=driver, config=config, rules=StepRules(max_steps=16),
                      durability=durability) as agent:
        agent.memory.archival_insert_many(task.passages)
        t = time.perf_counter()
        result = agent.step(task.question)
        wall = time.perf_counter() - t
    searches = [c for c in result.calls if c.name == "archival_memory_search"]
    return {"replies": result.replies, "searches": len(searches), "kernel_s": wall - driver.seconds,
            "steps": result.steps, "flushes": result.flushes, "stopped": result.stopped}


def run(data: Path, levels: Sequence[int] | None, samples: int, config: MemoryConfig, durability: str,
        progress: bool) -> list[LevelResult]:
    """Every (L, ordering) question; one result per L."""
    pairs = load_record(data / RECORDS, 0)
    orderings = load_orderings(data, levels)
    jobs = [(L, idx) for L, rows in sorted(orderings.items()) for idx in rows[:samples]]
    results = {L: LevelResult(L) for L in sorted(orderings)}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), unit="q", desc="nested KV", leave=False)
    with tempfile.TemporaryDirectory(prefix="vmem-nested-kv-") as tmp:
        for n, (L, idx) in enumerate(jobs):
            task = make_task(pairs, idx)
            out = run_question(task, Path(tmp) / f"q{n}", config, durability)
            r = results[L]
            r.searches.append(out["searches"])
            r.kernel_s.append(out["kernel_s"])
            r.steps.append(out["steps"])
            r.flushes += out["flushes"]
            if out["replies"] == [task.answer]:
                r.correct += 1
            else:
                r.failures.append(f"L={L} {idx}: answered {out['replies']!r}, expected {task.answer} "
                                  f"({out['searches']} searches, {out['stopped']})")
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    return list(results.values())


def figures(results: Sequence[LevelResult]) -> list[Figure]:
    """Accuracy, page faults and kernel time per L, and kernel time over all questions."""
    out: list[Figure] = []
    for r in results:
        if not r.questions:
            continue
        acc = 100.0 * r.correct / r.questions
        out.append(Figure(f"nested KV accuracy, L={r.levels} ({r.questions} q)", round(acc, 1), "%",
                          target="100 %", met=r.correct == r.questions))
        faults = float(np.mean(r.searches))
        out.append(Figure(f"nested KV page faults per question, L={r.levels}", round(faults, 2), "",
                          target=f"= {r.levels + 1} (L lookups + the final miss)", met=faults == r.levels + 1))
        out.append(Figure.timed(f"nested KV kernel time per question, L={r.levels} (p50)",
                                float(np.median(r.kernel_s)), unit="ms"))
    every = [s for r in results for s in r.kernel_s]
    faults = sum(sum(r.searches) for r in results)
    if every:
        out.append(Figure.timed("nested KV kernel time per question, all L (p50)", float(np.median(every)), unit="ms"))
        out.append(Figure.timed("nested KV kernel time per question, all L (p99)",
                                float(np.percentile(every, 99)), unit="ms"))
        out.append(Figure.timed("nested KV kernel time per page fault (mean)", sum(every) / max(1, faults), unit="ms"))
    return out


def report(results: Sequence[LevelResult], config: MemoryConfig, durability: str) -> str:
    """A human-readable table, per L."""
    lines = [f"nested KV (record 0, window {config.window}, durability {durability}; kernel time excludes the driver)",
             f"{'L':>2} {'questions':>9} {'accuracy':>9} {'faults/q':>9} {'steps/q':>8} {'flushes':>7} "
             f"{'kernel p50':>11} {'kernel p99':>11}"]
    for r in results:
        if not r.questions:
            continue
        lines.append(f"{r.levels:>2} {r.questions:>9} {100 * r.correct / r.questions:>8.1f}% "
                     f"{np.mean(r.searches):>9.2f} {np.mean(r.steps):>8.2f} {r.flushes:>7} "
                     f"{1e3 * np.median(r.kernel_s):>8.2f} ms {1e3 * np.percentile(r.kernel_s, 99):>8.2f} ms")
    for r in results:
        lines.extend(f"  wrong: {f}" for f in r.failures[:5])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="MemGPT's nested key-value task on the official data, through the "
                                            "kernel with a scripted lookup policy: accuracy, page faults and "
                                            "kernel time per question.")
    p.add_argument("--path", type=Path, default=DEFAULT_PATH,
                   help="folder with the task's data files (default: ../shared/data/nested_kv)")
    p.add_argument("--levels", type=int, nargs="+", default=None,
                   help="chain lengths L to run (default: every orderings file present)")
    p.add_argument("--samples", type=int, default=100, help="orderings per L (default: %(default)s)")
    p.add_argument("--window", type=int, default=8192, help="the agent's context window, tokens (default: %(default)s)")
    p.add_argument("--durability", choices=["full", "normal"], default="full",
                   help="storage durability: full fsyncs every commit (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the figures (bench/figures.py shape) as a JSON list")
    p.add_argument("--quick", action="store_true", help="10 orderings per L")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    if not (args.path / RECORDS).exists():
        print(f"nested_kv: data not found at {args.path / RECORDS} (pass --path to the folder holding "
              f"{RECORDS} and the orderings files); skipped", file=sys.stderr)
        if args.json:
            print("[]")
        return 0
    samples = min(args.samples, 10) if args.quick else args.samples
    config = MemoryConfig(window=args.window)
    t = time.perf_counter()
    results = run(args.path, args.levels, samples, config, args.durability, not args.no_progress)
    if not results:
        print(f"nested_kv: no orderings files in {args.path}; skipped", file=sys.stderr)
        if args.json:
            print("[]")
        return 0
    print(report(results, config, args.durability), file=sys.stderr if args.json else sys.stdout)
    print(f"({time.perf_counter() - t:.0f} s)", file=sys.stderr if args.json else sys.stdout)
    emit(figures(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
