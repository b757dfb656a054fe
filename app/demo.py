"""``vmem demo``: the memory kernel at work on a built-in conversation, offline.

An agent with a small context window (4,096 tokens, of which the tool schemas
take about 1,800) talks with "Maya" over three sessions a few weeks apart:
she tells it about herself, her plans and the people around her, then asks
questions whose answers have long left the context window. The agent is
closed after the second session and reopened from its directory, as a new
process would, and its state digest is compared.

The LLM is replaced by :class:`RuleBasedPolicy`: a deterministic driver made
of a few rules over the latest user message and the tool results. It is NOT a
language model; it plays one so that everything the kernel does (memory
functions, the warning alert, flushes behind a recursive summary, prefetch
and page faults, persistence) can be watched without a server or an API key.

What the demo verifies about its own run (exit code 1 otherwise): every
question is answered with the expected fact, the run crosses the warning
watermark, flushes more than once, makes explicit page faults and answers
some questions from prefetched pages, the digests before closing and after
reopening are equal, and ``vm_check`` holds after every step.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from vmem import PageKind, page_kind
from vmem.app.activity import activity
from vmem.app.contextmap import render_map
from vmem.app.progress import Progress
from vmem.kernel import Agent, MemoryConfig, StepResult, prefix_cache, read_trace
from vmem.kernel.daemon import ConsolidationDaemon, DaemonConfig
from vmem.kernel.drivers import Completion, Driver
from vmem.storage import display, is_url
from vmem.app.rulepolicy import RuleBasedPolicy

__all__ = ["DEMO_CONFIG", "CONVERSATION", "Session", "Turn", "RuleBasedPolicy", "DemoReport", "run_demo"]

#: The demo agent's configuration: a small window, so memory pressure comes quickly.
DEMO_CONFIG = MemoryConfig(window=4096, reserve_output=512, keep_last=4, ws_budget=320, prefetch=2, page_size=3)

SYSTEM_PROMPT = (
    "You are a personal assistant with a paged memory. Keep the key facts about the user in core "
    "memory, save everything else worth keeping to archival memory, and search archival memory or "
    "the conversation history before answering a question whose answer is not in your context."
)
BLOCKS: dict[str, Any] = {
    "persona": {"value": "I am Vee, a concise assistant who remembers what the user tells me.", "limit": 300},
    "human": {"value": "", "limit": 600, "description": "key facts about the user"},
}


# ---------------------------------------------------------------------- the conversation


@dataclass(frozen=True)
class Turn:
    """One user message; ``expect`` is the fact a good answer must contain (questions only)."""

    text: str
    expect: str | None = None


@dataclass(frozen=True)
class Session:
    """A conversation session on one day."""

    title: str
    start: _dt.datetime
    turns: tuple[Turn, ...]


def _at(day: str, hour: int) -> _dt.datetime:
    return _dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=_dt.timezone.utc)


CONVERSATION: tuple[Session, ...] = (
    Session("first meeting", _at("2024-03-04", 19), (
        Turn("Hi! My name is Maya. I live in Lisbon and I work as a nurse at Santa Maria hospital."),
        Turn("My dog Pixel is a three-year-old beagle who is terrified of thunderstorms."),
        Turn("My sister Inês lives in Porto and her birthday is on 14 May."),
        Turn("I'm allergic to peanuts, so please keep that in mind for recipes."),
        Turn("Today I finally fixed the leaking kitchen tap myself."),
        Turn("I love cooking Goan fish curry on Sundays for friends."),
        Turn("By the way, which dog breed is Pixel?", expect="beagle"),
    )),
    Session("plans", _at("2024-03-16", 10), (
        Turn("I'm planning a trip to Japan in October with my partner João."),
        Turn("We want to spend a week in Kyoto and then hike the Nakasendo trail."),
        Turn("My colleague Rui will look after Pixel while we are away."),
        Turn("I started learning to surf at Carcavelos beach on Sunday mornings."),
        Turn("I also signed up for the Lisbon half marathon next March."),
        Turn("My best friend Leonor is getting married in Sintra on 8 June."),
        Turn("When is the birthday of my sister?", expect="14 May"),
        Turn("Who will look after Pixel during the trip?", expect="Rui"),
    )),
    Session("a few weeks later", _at("2024-04-02", 18), (
        Turn("Big news: we moved from Lisbon to Porto last week, closer to my sister."),
        Turn("I switched jobs too: I now work as a nurse at São João hospital."),
        Turn("My partner João got a job at a design studio by the river."),
        Turn("The Japan trip is booked: we fly to Osaka on 3 October."),
        Turn("The weather here has been rainy all week."),
        Turn("Where do I live now?", expect="Porto"),
        Turn("What did I tell you about the kitchen tap?", expect="kitchen tap"),
        Turn("What did I tell you about my plans on 16 March?", expect="Japan"),
        Turn("Which trail do we want to hike in Japan?", expect="Nakasendo"),
        Turn("What am I allergic to?", expect="peanuts"),
        Turn("Which race did I sign up for?", expect="half marathon"),
        Turn("Whose wedding is in Sintra?", expect="Leonor"),
    )),
)
REOPEN_BEFORE = 2  #: the agent is closed and reopened before this session (0-based)


# ---------------------------------------------------------------------- the run


class _Style:
    """ANSI styles, or none."""

    def __init__(self, color: bool) -> None:
        self.color = color

    def __call__(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text


@dataclass
class DemoReport:
    """What the demo run did (its self-checks read this)."""

    user_messages: int = 0
    llm_steps: int = 0
    summaries: int = 0
    alerts: int = 0
    flushes: int = 0
    prefetched: int = 0
    page_faults: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    answers: list[tuple[str, str, str, bool]] = field(default_factory=list)  # question, reply, source, ok
    digest_before: str = ""
    digest_after: str = ""
    checks: int = 0
    seconds: float = 0.0
    model: str | None = None  #: the real model's name, when a server answered (not RuleBasedPolicy)
    prompt_tokens: int = 0  #: step calls after a step call with no flush between: tokens sent ...
    cached_tokens: int = 0  #: ... and those the server said it served from its prompt cache
    model_seconds: float = 0.0
    daemon_runs: int = 0  #: consolidation runs applied (with a daemon)
    daemon_applied: int = 0  #: their proposals applied
    blocks_changed: list[str] = field(default_factory=list)  #: core memory blocks the run changed

    def failures(self) -> list[str]:
        """What the run should have shown and did not. With a real model only what the kernel
        owes counts (the invariants after every step, an identical state after reopening):
        a small model answering badly is reported, not a failure."""
        if self.model is not None:
            same = self.digest_before and self.digest_before == self.digest_after
            return [] if same else ["the digest after reopening differs from the one before closing"]
        out = []
        wrong = [q for q, _, _, ok in self.answers if not ok]
        if wrong:
            out.append(f"{len(wrong)} question(s) not answered with the expected fact: {wrong}")
        if not self.alerts:
            out.append("the warning watermark was never crossed")
        if self.flushes < 2:
            out.append(f"expected more than one flush, got {self.flushes}")
        if not self.page_faults:
            out.append("no explicit page fault")
        if not any(src == "working set" for _, _, src, _ in self.answers):
            out.append("no answer came from a prefetched page")
        if not self.digest_before or self.digest_before != self.digest_after:
            out.append("the digest after reopening differs from the one before closing")
        return out


class DemoClock:
    """A deterministic clock: the agent's creation a minute before the first session, then each
    session's messages two minutes apart from its start (one reading per step)."""

    def __init__(self, sessions: Sequence[Session]) -> None:
        self._times = iter([s.start + _dt.timedelta(minutes=2 * i) for s in sessions for i in range(len(s.turns))])
        self._now = sessions[0].start - _dt.timedelta(minutes=1)
        self._started = False

    def __call__(self) -> _dt.datetime:
        if self._started:
            self._now = next(self._times, self._now)
        self._started = True
        return self._now


def _describe_call(name: str, arguments: dict[str, Any] | None, width: int = 100) -> str:
    args = {k: v for k, v in (arguments or {}).items() if k != "request_heartbeat"}
    text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
    text = f"{name}({text})"
    return text if len(text) <= width else text[: width - 1] + "…"


def _page_names(pages: Sequence[int]) -> str:
    kinds = {PageKind.PASSAGE: "archival", PageKind.MESSAGE: "recall"}
    return ", ".join(f"{kinds.get(page_kind(p), '?')} {p & ((1 << 56) - 1)}" for p in pages)


def run_demo(out: TextIO, *, color: bool = False, directory: str | Path | None = None,
             quiet: bool = False, driver: Driver | None = None, model: str | None = None,
             config: MemoryConfig = DEMO_CONFIG, daemon: Driver | None = None,
             daemon_every: int = 3, progress: Progress | None = None) -> tuple[int, DemoReport]:
    """Run the demo, writing to ``out``; return (exit code, report).

    ``progress``: shows each slow call of the real model live (its own stream, stderr in the CLI).

    ``directory``: where the agent lives (kept afterwards; must not hold an
    agent); None for a temporary directory removed at the end. ``driver``: a real
    model's driver (named ``model`` in the report) instead of RuleBasedPolicy.
    ``daemon``: a driver for a consolidation daemon beside the agent
    (:class:`vmem.kernel.daemon.ConsolidationDaemon`, every ``daemon_every`` turns; it
    finishes its work at the end of each session, the weeks between them being idle time).
    """
    style = _Style(color)
    report = DemoReport(model=model if driver is not None else None)
    started = time.perf_counter()
    tmp = None
    path: str | Path  # the agent's directory, or a PostgreSQL URL
    if directory is None:
        tmp = tempfile.mkdtemp(prefix="vmem-demo-")
        path = Path(tmp) / "agent"
    else:
        path = directory if is_url(directory) else Path(directory)
    rules = RuleBasedPolicy()
    if driver is not None and progress is not None:
        driver = progress.wrap(driver)
    policy: Driver = _Timed(driver, report) if driver is not None else rules
    clock = DemoClock(CONVERSATION)

    def say(text: str = "") -> None:
        if not quiet:
            out.write(text + "\n")

    try:
        if driver is None:
            say(style("vmem demo", "1") + ": a MemGPT-style agent with a " f"{config.window:,}-token window, "
                "driven by RuleBasedPolicy,")
            say("a deterministic rule-based stand-in for the LLM (not a language model): no server, no API key.")
        else:
            say(style("vmem demo", "1") + f": a MemGPT-style agent with a {config.window:,}-token window, "
                f"answered by the model {model}")
            say("(the same conversation; how well it answers is the model's, what the memory does is the kernel's)")
        say(f"agent directory: {display(path)}" + ("" if tmp is None else " (temporary)"))
        agent = Agent.create(path, system=SYSTEM_PROMPT, blocks=BLOCKS, driver=policy, config=config,
                             clock=clock)
        kswapd = ConsolidationDaemon(agent, daemon, DaemonConfig(every=daemon_every)) if daemon else None
        shown = failed = 0  # the daemon's reports and errors already shown
        memory = agent.memory
        c = memory.ctx.config
        say(f"budget {c.budget:,} tokens = window {c.window:,} - output reserve {config.reserve_output:,} "
            f"- tool schemas {c.reserve - config.reserve_output:,}; warn at {c.warn:.0%}, "
            f"flush at {c.flush:.0%}; prefetch {config.prefetch} pages per message")
        say(render_map(memory.context_map(), color=color))
        try:
            for n, session in enumerate(CONVERSATION):
                if n == REOPEN_BEFORE:
                    if kswapd is not None:
                        kswapd.stop()
                    agent = _reopen(agent, path, policy, clock, report, say, style)
                    if daemon is not None:
                        kswapd = ConsolidationDaemon(agent, daemon, DaemonConfig(every=daemon_every))
                        shown = failed = 0
                say()
                say(style(f"── session {n + 1} · {session.start:%a %-d %b %Y} · {session.title} ", "1;36")
                    + "─" * max(0, 40 - len(session.title)))
                for k, turn in enumerate(session.turns):
                    if progress is not None:
                        progress.stage = (f"session {n + 1} of {len(CONVERSATION)}, message {k + 1} of "
                                          f"{len(session.turns)}")
                    _step(agent, turn, rules if driver is None else None, report, say, style, color)
                if kswapd is not None:  # the time until the next session: the daemon finishes its run
                    kswapd.wait()
                    for run in kswapd.reports[shown:]:
                        say(f"{style('kswpd', '1;33')} consolidated messages {run.start + 1}-{run.end}: "
                            f"{run.applied} applied, {run.skipped_total} skipped of {run.proposed} proposed")
                        report.daemon_runs += 1
                        report.daemon_applied += run.applied
                    shown = len(kswapd.reports)
                    for error in kswapd.errors[failed:]:
                        say(f"{style('kswpd', '1;31')} {error}")
                    failed = len(kswapd.errors)
            evicted, summary = agent.memory.evicted, agent.memory.summary
            say()
            say(style(f"the recursive summary of the {evicted} evicted messages, as the agent sees it now:", "1"))
            say("\n".join("  " + line for line in summary.splitlines()))
            say(style("core memory (human):", "1"))
            say("\n".join("  " + line for line in agent.memory.block("human").value.splitlines()))
        finally:
            if kswapd is not None:
                kswapd.stop()
            if not agent.memory.closed:
                agent.close()
        if driver is None:
            report.summaries = rules.summaries
        _cache_figures(path, report)
        report.seconds = time.perf_counter() - started
        failures = report.failures()
        _summary(out, report, style, failures)
        return (1 if failures else 0), report
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _reopen(agent: Agent, path: str | Path, policy: Driver, clock: DemoClock,
            report: DemoReport, say: Callable[..., None], style: _Style) -> Agent:
    report.digest_before = agent.memory.digest()
    agent.close()
    say()
    say(style("── closing the agent and reopening it from its directory (as a new process would) ", "1;35"))
    say(f"state digest before close: {report.digest_before}")
    agent = Agent.open(path, driver=policy, clock=clock)
    report.digest_after = agent.memory.digest()
    same = "identical" if report.digest_after == report.digest_before else style("DIFFERENT", "1;31")
    say(f"state digest after open:   {report.digest_after}  ({same})")
    return agent


def _step(agent: Agent, turn: Turn, policy: RuleBasedPolicy | None, report: DemoReport,
          say: Callable[..., None], style: _Style, color: bool) -> None:
    """One user message; ``policy`` None when a real model answers (its replies are checked)."""
    before_answers = len(policy.answers) if policy is not None else 0
    evicted_before = agent.memory.evicted
    result: StepResult = agent.step(turn.text)
    agent.memory.check()  # every invariant of the memory (the C core's vm_check among them)
    report.checks += 1
    report.user_messages += 1
    report.llm_steps += result.steps
    report.alerts += result.alerts
    report.flushes += result.flushes
    report.prefetched += len(result.paged_in)
    for call in result.calls:
        report.calls[call.name] = report.calls.get(call.name, 0) + 1
        if call.name in ("archival_memory_search", "conversation_search"):
            report.page_faults += 1
    say()
    say(f"{style('user ', '1;34')} {turn.text}")
    if result.paged_in:
        say(f"{style('pref ', '33')} kernel prefetched {len(result.paged_in)} page(s) into the working set "
            f"before the call: {_page_names(result.paged_in)}")
    if result.alerts:
        say(f"{style('alert', '1;33')} warning watermark crossed: the kernel inserted a memory-pressure alert")
    for call in result.calls:
        mark = "ok" if call.ok else style("failed", "31")
        fault = " ← page fault" if call.name in ("archival_memory_search", "conversation_search") else ""
        if call.name != "send_message":
            say(f"{style('call ', '2')} {_describe_call(call.name, call.arguments)} → {mark}{fault}")
    if result.flushes:
        evicted, summary = agent.memory.evicted, agent.memory.summary
        items = sum(1 for line in summary.splitlines() if line.startswith("- "))
        fold = re.match(r"Running summary \(fold (\d+)", summary)
        say(f"{style('flush', '1;35')} flush watermark reached: {evicted - evicted_before} oldest queue messages "
            f"evicted to recall storage behind a recursive summary (fold {fold.group(1) if fold else '?'}: "
            f"{items} items, {len(summary.split())} words)")
    for reply in result.replies:
        say(f"{style('agent', '1;32')} {reply}")
    if policy is None:  # a real model: does its reply hold the expected fact?
        if turn.expect is not None:
            reply = " ".join(result.replies)
            ok = turn.expect.lower() in reply.lower()
            report.answers.append((turn.text, reply, "the model" if reply else "no answer", ok))
            say(f"{style('check', '2')} {'✓' if ok else style('✗ expected ' + repr(turn.expect), '31')}")
    else:
        for answer in policy.answers[before_answers:]:
            ok = turn.expect is not None and turn.expect.lower() in answer.reply.lower()
            report.answers.append((turn.text, answer.reply, answer.source, ok))
            verdict = "✓" if ok else style("✗ expected " + repr(turn.expect), "31")
            say(f"{style('from ', '2')} {answer.source} {verdict}")
        if turn.expect is not None and len(policy.answers) == before_answers:
            report.answers.append((turn.text, "", "no answer", False))
    if result.usage:
        u = result.usage[-1]
        cached = f", {u.cached_tokens:,} from the server's prompt cache" if u.cached_tokens is not None else ""
        say(f"{style('usage', '2')} {result.steps} LLM call(s); the last prompt {u.prompt_tokens:,} tokens{cached}")
    say(render_map(agent.memory.context_map(), color=color))


class _Timed(Driver):
    """A real model's driver, timed (the report splits model time from kernel time)."""

    def __init__(self, inner: Driver, report: DemoReport) -> None:
        self.inner, self.report = inner, report

    def complete(self, messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]]) -> Completion:
        t = time.perf_counter()
        try:
            return self.inner.complete(messages, tools)
        finally:
            self.report.model_seconds += time.perf_counter() - t
            if not tools:
                self.report.summaries += 1


def _cache_figures(path: str | Path, report: DemoReport) -> None:
    """Prompt tokens sent and served from the server's cache where the prefix should be stable;
    the core memory blocks changed."""
    events = list(read_trace(path))
    tally = prefix_cache(events)
    report.prompt_tokens, report.cached_tokens = tally.prompt_tokens, tally.cached_tokens
    report.blocks_changed = activity(events).blocks


def _summary(out: TextIO, r: DemoReport, style: _Style, failures: list[str]) -> None:
    sources: dict[str, int] = {}
    for _, _, src, _ in r.answers:
        sources[src] = sources.get(src, 0) + 1
    right = sum(ok for *_, ok in r.answers)
    out.write("\n" + style("summary", "1") + "\n")
    who = f"the model {r.model}" if r.model else "RuleBasedPolicy (not a language model)"
    out.write(f"  {r.user_messages} user messages in {len(CONVERSATION)} sessions; {r.llm_steps} LLM steps "
              f"({r.llm_steps / max(1, r.user_messages):.1f} per message) and {r.summaries} summary calls to {who}\n")
    out.write(f"  memory pressure: {r.alerts} warning alert(s), {r.flushes} flushes into a recursive summary\n")
    calls = ", ".join(f"{n} {k}" for k, n in sorted(r.calls.items()))
    out.write(f"  memory functions: {calls or 'none'}\n")
    out.write(f"  core memory blocks changed: {', '.join(r.blocks_changed) or 'none'}\n")
    out.write(f"  paging: {r.page_faults} explicit page faults (searches), {r.prefetched} pages prefetched "
              f"by the kernel without a call\n")
    out.write(f"  answers: {right}/{len(r.answers)} with the expected fact ("
              + ", ".join(f"{n} from {s}" for s, n in sorted(sources.items())) + ")\n")
    if r.daemon_runs:
        out.write(f"  consolidation daemon: {r.daemon_runs} runs, {r.daemon_applied} proposals applied\n")
    same = "identical" if r.digest_before and r.digest_before == r.digest_after else "DIFFERENT"
    out.write(f"  persistence: digest before close {r.digest_before[:16]}… after reopen "
              f"{r.digest_after[:16]}… ({same})\n")
    if r.prompt_tokens:
        out.write(f"  prompt cache: {r.cached_tokens:,} of {r.prompt_tokens:,} prompt tokens between flushes served "
                  f"from the server's cache ({100 * r.cached_tokens / r.prompt_tokens:.0f}%)\n")
    model = f" ({r.model_seconds:.1f} s in the model, {r.seconds - r.model_seconds:.1f} s the rest)" if r.model else ""
    out.write(f"  invariants: Memory.check() (vm_check among them) passed after all {r.checks} steps; "
              f"{r.seconds:.1f} s{model}\n")
    for f in failures:
        out.write(style(f"  FAILED: {f}", "1;31") + "\n")
