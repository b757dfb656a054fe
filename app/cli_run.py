"""``vmem demo`` and ``vmem chat``: an agent that runs, offline or over any OpenAI-compatible server.

Registered with :func:`vmem.app.commands.command` when :mod:`vmem.app.cli` imports this module;
the chat loop's slash commands and how a step is shown live here too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import TYPE_CHECKING, TextIO

from vmem.app.commands import (
    DEFAULT_BLOCKS,
    DEFAULT_SYSTEM,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_color,
    add_progress,
    agent_location,
    command,
    has_agent,
    make_progress,
    server_of,
    shown,
    use_color,
)

if TYPE_CHECKING:
    from vmem.kernel import Agent, StepResult

# ---------------------------------------------------------------------- demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    add_color(p)
    p.add_argument("--dir", metavar="DIR", help="keep the agent in DIR (a new directory; default: a temporary "
                                                 "directory removed at the end); look at it with vmem inspect DIR")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary lines")
    real = p.add_argument_group("a real model instead of RuleBasedPolicy (any OpenAI-compatible server)")
    real.add_argument("--base-url", help="the server's base URL, e.g. http://127.0.0.1:8080/v1")
    real.add_argument("--model", help="the model name to send")
    real.add_argument("--tool-mode", choices=("auto", "native", "json"), default="auto",
                      help="how tools reach the model (json for models whose chat template has no tool calls)")
    real.add_argument("--merge-system", action="store_true",
                      help="one leading system message and the user's turn last (for small models; see OpenAIDriver)")
    real.add_argument("--window", type=int, default=None,
                      help="the agent's context window (default 4096; at most the server's)")
    real.add_argument("--max-tokens", type=int, default=256, help="longest answer per LLM call (default 256)")
    real.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for the server (default 600)")
    real.add_argument("--daemon", action="store_true",
                      help="run the consolidation daemon beside the agent, on the same server and model")
    real.add_argument("--daemon-every", type=int, default=3, metavar="TURNS",
                      help="with --daemon: a consolidation run every this many user turns (default 3)")
    add_progress(real)


@command("demo", "the main job: an agent with a small window, offline (no server, no API key)",
         "Run an agent with a 4,096-token window through a built-in conversation of three sessions "
         "(a user telling it about herself, her plans and people, then asking about them), driven by "
         "RuleBasedPolicy: a deterministic rule-based stand-in for the LLM, not a language model. Watch "
         "the kernel save facts to core and archival memory, cross the warning watermark, flush into a "
         "recursive summary, page facts back in (page faults and prefetch), and survive a close and "
         "reopen with an identical state digest. After each step: the context map and what moved. "
         "Exit code 1 if the run did not show what it should (each check is printed). With --base-url and "
         "--model a real model answers the same conversation through the OpenAI-compatible driver; the "
         "report adds its answers, LLM calls per message and the server's prompt-cache ratio, and only "
         "the kernel's own checks decide the exit code.",
         _demo_args)
def _demo(args: argparse.Namespace) -> int:
    from vmem.app.demo import run_demo

    if args.dir is not None:
        target = agent_location(args.dir, must_exist=False)
        if isinstance(target, str):
            if has_agent(target):
                raise CliError(f"--dir {shown(target)} holds an agent already; name a new one", EXIT_USAGE)
        elif target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise CliError(f"--dir {target} exists and is not an empty directory; name a new one", EXIT_USAGE)
    driver = None
    config = None
    if args.base_url or args.model:
        if not (args.base_url and args.model):
            raise CliError("a real model needs both --base-url and --model", EXIT_USAGE)
        from vmem.app.demo import DEMO_CONFIG
        from vmem.kernel.drivers import OpenAIDriver

        try:
            config = dataclasses.replace(DEMO_CONFIG, window=args.window) if args.window else DEMO_CONFIG
        except ValueError as exc:
            raise CliError(f"--window: {exc}", EXIT_USAGE) from None
        driver = OpenAIDriver(args.model, base_url=args.base_url, tool_mode=args.tool_mode, timeout=args.timeout,
                              params={"max_tokens": args.max_tokens}, merge_system=args.merge_system)
    if args.daemon and driver is None:
        raise CliError("--daemon needs a real model: --base-url and --model", EXIT_USAGE)
    if args.daemon_every < 1:
        raise CliError("--daemon-every must be >= 1", EXIT_USAGE)
    daemon = None
    if args.daemon:
        from vmem.kernel.drivers import OpenAIDriver

        daemon = OpenAIDriver(args.model, base_url=args.base_url, timeout=args.timeout,
                              params={"max_tokens": 400})
    try:
        code, _ = run_demo(sys.stdout, color=use_color(args.color, sys.stdout), directory=args.dir, quiet=args.quiet,
                           driver=driver, model=args.model, daemon=daemon, daemon_every=args.daemon_every,
                           progress=make_progress(args.progress) if driver else None,
                           **({"config": config} if config else {}))
    finally:
        if driver is not None:
            driver.close()
        if daemon is not None:
            daemon.close()
    if args.dir is not None:
        print(f"the agent is kept in {shown(args.dir)}: vmem inspect {args.dir} (--html FILE for a page)")
    return code


# ---------------------------------------------------------------------- chat


def _chat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory, or a postgresql://user@host/db?agent=NAME URL "
                                              "(an agent is created there if it holds none)")
    p.add_argument("--model", help="model name (default: $VMEM_MODEL)")
    p.add_argument("--base-url", help="the server's OpenAI-compatible base URL, e.g. http://localhost:8080/v1 "
                                      "(default: $VMEM_BASE_URL, then $OPENAI_BASE_URL, then api.openai.com when "
                                      "an API key is set); the key comes from $VMEM_API_KEY or $OPENAI_API_KEY")
    p.add_argument("--tool-mode", choices=("auto", "native", "json"), default=None,
                   help="how tools reach the model (default: $VMEM_TOOL_MODE or auto)")
    p.add_argument("--merge-system", action="store_true",
                   help="one leading system message and the user's turn last (for small models; see OpenAIDriver)")
    p.add_argument("--system", help="system instructions for a new agent (ignored when DIR holds one)")
    p.add_argument("--window", type=int, default=None,
                   help="context window of a new agent, tokens (default 8192; ignored when DIR holds one)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the server (default 120)")
    d = p.add_argument_group("the consolidation daemon (in this process, beside the agent)")
    d.add_argument("--daemon", action="store_true",
                   help="consolidate the memory in the background: core memory lines, dated facts, supersessions")
    d.add_argument("--daemon-model", metavar="NAME", help="its model (default: the agent's); e.g. a smaller one")
    d.add_argument("--daemon-base-url", metavar="URL", help="its server (default: the agent's)")
    d.add_argument("--daemon-every", type=int, default=5, metavar="TURNS",
                   help="a run every this many user turns (default 5)")
    d.add_argument("--daemon-idle", type=float, default=30.0, metavar="SECONDS",
                   help="and once no message came for this long (default 30; 0: never)")
    add_color(p)
    add_progress(p)


CHAT_HELP = """commands:
  /map              the context map (what is in the window now)
  /core             the core memory blocks
  /summary          the recursive summary of evicted messages
  /recall QUERY     search the conversation history (recall storage)
  /archival QUERY   search archival memory
  /help             this help
  /quit             leave (Ctrl-D too)
anything else is a message to the agent"""


@command("chat", "chat with a persistent agent over any OpenAI-compatible server",
         "Talk to the agent in DIR (created there if DIR holds none) through any server that speaks "
         "/v1/chat/completions: OpenAI, vLLM, llama.cpp, Ollama, LM Studio. Reads stdin line by line (it "
         "works piped); lines starting with / are commands (/help lists them). Everything is saved after "
         "each message: stop at any time and come back with the same DIR.",
         _chat_args)
def _chat(args: argparse.Namespace) -> int:
    from vmem import VmemError
    from vmem.kernel import Agent, ContextWindowError, MemoryConfig
    from vmem.kernel.drivers import DriverError, OpenAIDriver

    model, base_url = server_of(args)
    path = agent_location(args.dir, must_exist=False)
    url = isinstance(path, str)
    if not url and path.exists() and any(path.iterdir()) and not (path / "vmem.db").exists():
        raise CliError(f"{path} is not empty and holds no vmem agent; name a new or an agent's directory",
                       EXIT_USAGE)
    try:
        window = args.window if args.window is not None else 8192
        config = MemoryConfig(window=window, reserve_output=min(1024, window // 8))
    except ValueError as exc:
        raise CliError(f"--window: {exc}", EXIT_USAGE) from None
    from vmem.app.activity import activity, session_start

    progress = make_progress(args.progress)
    driver = progress.wrap(OpenAIDriver(model, base_url=base_url, tool_mode=args.tool_mode, timeout=args.timeout,
                                        merge_system=args.merge_system))
    out = sys.stdout
    color = use_color(args.color, out)
    if (url or (path / "vmem.db").exists()) and has_agent(path):
        agent = Agent.open(path, driver=driver)
        how = "reopened"
        given = (("--system", args.system is not None), ("--window", args.window is not None))
        ignored = [flag for flag, was_given in given if was_given]
        if ignored:
            print(f"note: {' and '.join(ignored)} ignored: {shown(path)} holds an agent already", file=sys.stderr)
    else:
        if not url and path.exists() and any(path.iterdir()):
            raise CliError(f"{path} holds a vmem store but no agent; remove it or name another directory",
                           EXIT_FAILURE)
        try:  # a failed creation leaves the directory as it found it
            agent = Agent.create(path, system=args.system or DEFAULT_SYSTEM, blocks=DEFAULT_BLOCKS, driver=driver,
                                 config=config)
        except ContextWindowError as exc:
            raise CliError(f"--window {config.window} is too small: {exc}", EXIT_USAGE) from None
        how = "created"
    failures = 0
    daemon = daemon_driver = None
    start = session_start(agent.memory.store)
    messages = 0
    try:
        if args.daemon:
            from vmem.kernel import ConsolidationDaemon, DaemonConfig

            try:
                dconfig = DaemonConfig(every=args.daemon_every, idle=args.daemon_idle or None)
            except ValueError as exc:
                raise CliError(f"--daemon-every/--daemon-idle: {exc}", EXIT_USAGE) from None
            daemon_driver = OpenAIDriver(args.daemon_model or model, base_url=args.daemon_base_url or base_url,
                                         timeout=max(args.timeout, 300.0))
            daemon = ConsolidationDaemon(agent, daemon_driver, dconfig)
        out.write(f"vmem chat: agent {how} in {shown(path)} · model {model} at {base_url or 'api.openai.com'} · "
                  f"/help for commands\n")
        out.flush()
        interactive = sys.stdin.isatty()
        while True:
            if interactive:
                out.write("you › ")
                out.flush()
            line = sys.stdin.readline()
            if not line:
                break
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            if text.startswith("/"):
                if _slash(agent, text.strip(), out, color) == "quit":
                    break
                continue
            messages += 1
            progress.stage = f"message {messages}"
            try:
                result = agent.step(text)
            except (DriverError, VmemError) as exc:
                failures += 1
                print(f"vmem: error: {type(exc).__name__}: {exc} (nothing was changed: send it again)",
                      file=sys.stderr)
                continue
            _show_step(result, out, color)
            out.flush()
        if messages:  # what the memory did in this session: is the model using it at all?
            out.write(_paint("session:", "1", color) + "\n")
            out.write("".join(f"  {line}\n" for line in activity(agent.memory.store.events.read(after=start)).lines()))
    finally:
        if daemon is not None:  # a run in flight finishes (its LLM call, its apply) before the agent closes
            daemon.stop(timeout=None)
            for error in daemon.errors:
                print(f"vmem chat: consolidation daemon: {error}", file=sys.stderr)
        agent.close()
        driver.close()
        if daemon_driver is not None:
            daemon_driver.close()
    return EXIT_FAILURE if failures else EXIT_OK


def _paint(text: str, code: str, color: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if color else text


def _show_step(result: "StepResult", out: TextIO, color: bool) -> None:
    for call in result.calls:
        if call.name == "send_message":
            continue
        args = {k: v for k, v in (call.arguments or {}).items() if k != "request_heartbeat"}
        text = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in args.items())
        status = "ok" if call.ok else "failed: " + _failure(call.result)
        out.write(_paint(f"  · {call.name}({text[:100]}) {status}", "2", color) + "\n")
    if result.paged_in:
        out.write(_paint(f"  · prefetch: {len(result.paged_in)} page(s) paged into the working set", "2", color) + "\n")
    if result.alerts:
        out.write(_paint("  · memory pressure: the warning watermark was crossed", "33", color) + "\n")
    if result.flushes:
        out.write(_paint(f"  · flush: old messages moved to recall storage behind the summary "
                         f"({result.flushes}x)", "35", color) + "\n")
    for reply in result.replies:
        out.write(_paint("agent ›", "1;32", color) + f" {reply}\n")
    if not result.replies:
        out.write(_paint("agent › (no message)", "2", color) + "\n")
    if result.usage:
        prompt = sum(u.prompt_tokens for u in result.usage)
        cached = sum(u.cached_tokens or 0 for u in result.usage)
        known = any(u.cached_tokens is not None for u in result.usage)
        share = f", {cached:,} from the server's prompt cache ({100 * cached / prompt:.0f}%)" if known and prompt else ""
        out.write(_paint(f"  · {len(result.usage)} LLM call(s): {prompt:,} prompt tokens{share}", "2", color) + "\n")
    if result.stopped != "done":
        out.write(_paint(f"  · stopped: {result.stopped}", "33", color) + "\n")


def _failure(result: str) -> str:
    try:
        return str(json.loads(result).get("message", result))[:120]
    except (ValueError, AttributeError):
        return result[:120]


def _slash(agent: "Agent", text: str, out: TextIO, color: bool) -> str | None:
    """Run one slash command; "quit" to leave."""
    from vmem.app.contextmap import render_map
    from vmem.kernel.context import message_line, passage_line

    memory = agent.memory
    name, _, rest = text.partition(" ")
    rest = rest.strip()
    if name in ("/quit", "/exit", "/q"):
        return "quit"
    if name == "/help":
        out.write(CHAT_HELP + "\n")
    elif name == "/map":
        out.write(render_map(memory.context_map(), color=color) + "\n")
    elif name == "/core":
        for b in memory.blocks():
            out.write(_paint(f"[{b.label}]", "1", color) + f" {len(b.value)}/{b.limit} chars\n")
            out.write("".join(f"  {line}\n" for line in (b.value.splitlines() or ["(empty)"])))
    elif name == "/summary":
        out.write(f"{memory.evicted} messages evicted to recall storage\n{memory.summary or '(no summary yet)'}\n")
    elif name in ("/recall", "/archival"):
        if not rest:
            out.write(f"usage: {name} QUERY\n")
            return None
        if name == "/recall":
            messages = memory.store.recall.search(rest, page_size=10)
            total, lines = messages.total, [message_line(m) for m in messages.items]
        else:
            passages = memory.store.archival.search(rest, mode="hybrid", page_size=10)
            total, lines = passages.total, [passage_line(p) for p in passages.items]
        out.write(f"{total} match(es); the best {len(lines)}:\n" if lines else "no match\n")
        out.write("".join(f"  {line}\n" for line in lines))
    else:
        out.write(f"unknown command {name}: /help lists the commands\n")
    out.flush()
    return None
