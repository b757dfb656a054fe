#!/usr/bin/env python3
"""Foreground step latency with the consolidation daemon running, beside the same agent without it.

Two agents are built the same way (same system, blocks, 2,000 archival passages so the
daemon's searches do real work) and get the same user messages, ``--gap`` seconds apart (0.25 s,
as a user's messages come; not measured), each message to both agents in a random order so the
machine's load falls on both alike: one agent alone, one with a
:class:`vmem.kernel.daemon.ConsolidationDaemon` (a run every ``--every`` turns, default 5). The
agents' model is a ScriptedDriver (``send_message``), so a step is the kernel's own time. The
figures: ``Agent.step`` wall time, p50 and p99, of each agent; and the two parts of a run that
hold the agent's lock (reading a batch, applying it in one transaction): a step that starts
during one of them waits for it, which is what the daemon can cost a step beside the CPU
(and the GIL) its worker thread shares with the foreground. ``--gap 0.05`` is a stress test:
steps then often start during an apply.

The daemon's model is, by default, a sleeping driver: it waits ``--llm-seconds`` (0.2 s)
as an HTTP call to a model server waits (the GIL is free meanwhile), then answers a JSON
object with two core memory lines and two facts made from the newest user turn, so every
run applies real writes. With ``--base-url URL --model NAME`` the daemon calls that
OpenAI-compatible server instead (e.g. llama.cpp with a small model); on this 2-core machine
that server competes with the foreground for the CPU, which the figure then includes.

    .venv/bin/python bench/bench_daemon.py                    # 300 steps per agent, about 3 minutes
    .venv/bin/python bench/bench_daemon.py --quick            # 60 steps per agent
    .venv/bin/python bench/bench_daemon.py --json             # figures as JSON (bench/figures.py)
    .venv/bin/python bench/bench_daemon.py --base-url http://127.0.0.1:8080/v1 --model qwen

Target: the daemon's agent's step p50 within 10% of the lone agent's.
"""

from __future__ import annotations

import argparse
import random
import datetime as _dt
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from figures import Figure, emit  # noqa: E402

from vmem.kernel import Agent  # noqa: E402
from vmem.kernel.daemon import ConsolidationDaemon, DaemonConfig  # noqa: E402
from vmem.kernel.drivers import Completion, Driver, ScriptedDriver  # noqa: E402

TOPICS = ["city", "job", "pet", "sport", "food", "drink", "car", "book", "music", "plan"]


class SleepingDriver(Driver):
    """A model that takes ``seconds`` to answer (sleeping, as a client waits on HTTP), with
    proposals made from the newest user turn of the prompt; it picks the first known fact it is
    shown and says every one it is asked about was replaced (the most writes a run can make)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def complete(self, messages: list[dict], tools: list[dict]) -> Completion:
        self.calls += 1
        time.sleep(self.seconds)
        if "Old fact:" in messages[-1]["content"]:
            return Completion(text='{"replaced": true}')
        if messages[-1]["content"].startswith("Known facts:\n["):  # "which known fact is it about?": the first
            return Completion(text='{"same": 1}')
        users = re.findall(r"\] user: (.*)", messages[-1]["content"])
        last = users[-1] if users else "nothing"
        n = self.calls
        return Completion(text=f'{{"human": ["{TOPICS[n % 10]}: {last[:40]}"], "persona": [], '
                               f'"facts": ["{TOPICS[n % 10]} update {n}: {last[:60]}", "note {n}: {last[:50]}"]}}')


def make_agent(path: Path, passages: int) -> Agent:
    n = iter(range(10**9))

    def model(messages: list[dict], tools: list[dict]) -> dict:
        return {"id": f"c{next(n)}", "name": "send_message", "arguments": {"message": "ok"}}

    clock = iter(_dt.datetime(2024, 1, 1, tzinfo=_dt.timezone.utc) + _dt.timedelta(minutes=m) for m in range(10**7))
    agent = Agent.create(path, system="You are a helpful assistant.", driver=ScriptedDriver(model),
                         blocks={"human": {"value": "", "limit": 5000}, "persona": "helpful"},
                         clock=lambda: next(clock), durability="normal")
    agent.memory.archival_insert_many([f"passage {i} about {TOPICS[i % 10]} number {i * 7 % 1000}"
                                       for i in range(passages)])
    return agent


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def run(steps: int, passages: int, every: int, daemon_driver: Driver, gap: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vmem-bench-daemon-") as tmp:
        alone = make_agent(Path(tmp) / "alone", passages)
        busy = make_agent(Path(tmp) / "daemon", passages)
        daemon = ConsolidationDaemon(busy, daemon_driver, DaemonConfig(every=every))
        times: dict[str, list[float]] = {"alone": [], "daemon": []}
        messages = [f"I tell you about my {TOPICS[i % 10]}: it is number {i}, since day {i // 3}" for i in range(steps)]
        for warm in ("warm-up one", "warm-up two"):
            alone.step(warm)
            busy.step(warm)
        order = random.Random(7)
        for text in messages:  # strictly alternated, in a random order per pair: the machine's load hits both
            time.sleep(gap)  # the user's time between messages (not measured)
            pair = [("alone", alone), ("daemon", busy)]
            order.shuffle(pair)
            for name, agent in pair:
                t = time.perf_counter()
                agent.step(text)
                times[name].append(time.perf_counter() - t)
        daemon.wait(60)
        daemon.stop()
        reports = daemon.reports
        busy.memory.check()
        out = {"times": times, "runs": len(reports), "applied": sum(r.applied for r in reports),
               "read": [r.seconds["read"] for r in reports], "apply": [r.seconds["apply"] for r in reports],
               "skipped": sum(r.skipped_total for r in reports), "errors": list(daemon.errors)}
        alone.close()
        busy.close()
        return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="60 steps per agent, 500 passages")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--steps", type=int, default=None, help="steps per agent (default 300; --quick 60)")
    parser.add_argument("--every", type=int, default=5, help="the daemon runs every this many turns (default 5)")
    parser.add_argument("--llm-seconds", type=float, default=0.2,
                        help="how long the sleeping daemon model takes per call (default 0.2)")
    parser.add_argument("--gap", type=float, default=0.25,
                        help="seconds between two user messages, not measured (default 0.25)")
    parser.add_argument("--base-url", help="use this OpenAI-compatible server as the daemon's model instead")
    parser.add_argument("--model", help="the model name on --base-url")
    args = parser.parse_args(argv)
    steps = args.steps or (60 if args.quick else 300)
    passages = 500 if args.quick else 2000
    if args.base_url:
        from vmem.kernel.drivers import OpenAIDriver

        driver: Driver = OpenAIDriver(args.model or "model", base_url=args.base_url, timeout=600)
        what = f"{args.model} at {args.base_url}"
    else:
        driver = SleepingDriver(args.llm_seconds)
        what = f"a sleeping driver ({args.llm_seconds:g} s a call)"
    result = run(steps, passages, args.every, driver, args.gap)
    alone, busy = result["times"]["alone"], result["times"]["daemon"]
    p50a, p50b = statistics.median(alone), statistics.median(busy)
    figures = [
        Figure.timed("step p50 with the daemon (every %d turns; %s)" % (args.every, what), p50b, p50a, unit="ms",
                     target="<= 1.10x no daemon", met=p50b <= 1.10 * p50a),
        Figure.timed("step p99 with the daemon", percentile(busy, 0.99), percentile(alone, 0.99), unit="ms"),
        Figure.timed("daemon: reading a batch, p50 (holds the agent's lock)", statistics.median(result["read"]),
                     unit="ms"),
        Figure.timed("daemon: applying a run, p50 (holds the agent's lock)", statistics.median(result["apply"]),
                     unit="ms"),
        Figure("daemon runs applied", result["runs"], "runs"),
    ]
    emit(figures, args.json)
    if not args.json:
        print(f"{steps} steps per agent, {passages} passages; daemon: {result['runs']} runs, {result['applied']} "
              f"proposals applied, {result['skipped']} skipped, errors: {result['errors'] or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
