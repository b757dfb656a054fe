"""The ``vmem`` command line: how a newcomer meets vmem.

Commands (each one a :class:`Command` in :data:`COMMANDS`; a new command is
one more ``@command`` function, see ``_demo`` for the pattern)::

    vmem demo                      the main job: an agent on a small window, offline
    vmem chat DIR                  chat with a persistent agent over any OpenAI-compatible server
    vmem inspect DIR [--html F]    an agent's memory on disk, without calling its LLM
    vmem import FILE.af DIR        vmem agents from a Letta agent file (a report of what was mapped)
    vmem export DIR FILE.af        vmem agents as a Letta agent file
    vmem mcp DIR [--http]          an agent's memory served to MCP clients
    vmem check DIR                 verify every record, the indexes and the invariants (read-only)
    vmem consolidate DIR [--loop]  the consolidation daemon over an agent's memory, as its own process
    vmem eval locomo [PATH]        LoCoMo retrieval recall@k beside the paper's DRAGON figures
    vmem eval qa [PATH]            LoCoMo answers' F1: vmem beside truncation and RAG, on any server
    vmem bench [--quick]           every benchmark suite of a checkout, one table (figure, baseline, target)
    vmem reembed DIR [--embedder]  re-embed an agent's archival passages with another embedder
    vmem migrate SRC DST           copy an agent between a directory and a PostgreSQL URL (either way)

A memory's location (DIR above) is a directory or a PostgreSQL URL naming the agent,
``postgresql://user@host:5432/db?agent=ana``.

Errors are one line on stderr (``vmem: error: ...``), never a traceback
(``VMEM_DEBUG=1`` shows it), with the exit codes of :data:`EXIT_CODES`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence, TextIO

if TYPE_CHECKING:
    from vmem.app.progress import Progress
    from vmem.kernel import Agent, StepResult

__all__ = ["main", "CliError", "Command", "COMMANDS", "command", "EXIT_CODES"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILURE: "the work failed: an agent or store that cannot be opened (corrupt, locked, not an agent), "
                  "an LLM server error in chat, a demo self-check that did not hold, a malformed data file",
    EXIT_USAGE: "usage error: bad arguments, a missing directory or file, no model or server configured",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}
#: A new agent's system prompt: who it is. How to use its memory functions comes from the memory
#: itself (``Memory.create``'s default instructions, sent right after this), as in any program.
DEFAULT_SYSTEM = "You are a helpful assistant with a paged, persistent memory."
DEFAULT_BLOCKS = {
    "persona": {"value": "I am a helpful assistant who remembers what the user tells me.", "limit": 1000},
    "human": {"value": "", "limit": 2000, "description": "what I know about the user"},
}


class CliError(Exception):
    """A failure to report as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """A subcommand: ``configure`` adds its arguments, ``run`` does the work and returns the exit code."""

    name: str
    help: str
    description: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []


def command(name: str, help: str, description: str,
            configure: Callable[[argparse.ArgumentParser], None]) -> Callable[[Callable[[argparse.Namespace], int]],
                                                                             Callable[[argparse.Namespace], int]]:
    """Register a subcommand (its handler is the decorated function)."""
    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.append(Command(name, help, description, configure, run))
        return run
    return register


def _color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def _add_color(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the output: auto (default) when writing to a terminal")


def _add_progress(p: argparse._ActionsContainer) -> None:  # a parser or an argument group
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="while the model thinks, a live line on stderr with the elapsed time, then the call's "
                        "seconds, tokens and tokens/s: auto (default) when stderr is a terminal, never when piped")


def _progress(choice: str) -> "Progress":
    from vmem.app.progress import Progress

    enabled = choice == "always" or (choice == "auto" and Progress.auto(sys.stderr))
    return Progress(sys.stderr, enabled=enabled)


# ---------------------------------------------------------------------- opening agents


def _agent_dir(path: str, *, must_exist: bool) -> Any:
    """The agent's location: a directory (Path), or a PostgreSQL URL (str) checked for form."""
    from vmem.storage import is_url

    if is_url(path):
        from vmem.storage.postgres_db import PgLocation

        try:
            PgLocation.parse(path)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        if must_exist and not _has_agent(path):
            raise CliError(f"{_shown(path)} holds no vmem agent", EXIT_USAGE)
        return path
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CliError(f"{p} is a file, not an agent directory", EXIT_USAGE)
    if must_exist and not (p / "vmem.db").exists():
        what = "does not exist" if not p.exists() else "holds no vmem agent (no vmem.db)"
        raise CliError(f"{p} {what}", EXIT_USAGE)
    return p


def _shown(location: Any) -> str:
    """A location for messages (a URL without its password)."""
    from vmem.storage import display

    return display(location)


def _has_agent(path: Any) -> bool:
    """Whether ``path`` holds a vmem agent (not just a store). For a PostgreSQL location a server
    that cannot be reached is an error, not "no agent"."""
    from vmem.kernel import Memory
    from vmem.storage import StoreNotFoundError, is_url, open_store

    if is_url(path):
        from vmem.kernel.persistence import STATE_KEY

        try:
            with open_store(path, create=False, read_only=True) as store:
                return STATE_KEY in store.state
        except StoreNotFoundError:
            return False
    return Memory.exists(path)


# ---------------------------------------------------------------------- demo


def _demo_args(p: argparse.ArgumentParser) -> None:
    _add_color(p)
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
    _add_progress(real)


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
        target = _agent_dir(args.dir, must_exist=False)
        if isinstance(target, str):
            if _has_agent(target):
                raise CliError(f"--dir {_shown(target)} holds an agent already; name a new one", EXIT_USAGE)
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
        code, _ = run_demo(sys.stdout, color=_color(args.color, sys.stdout), directory=args.dir, quiet=args.quiet,
                           driver=driver, model=args.model, daemon=daemon, daemon_every=args.daemon_every,
                           progress=_progress(args.progress) if driver else None,
                           **({"config": config} if config else {}))
    finally:
        if driver is not None:
            driver.close()
        if daemon is not None:
            daemon.close()
    if args.dir is not None:
        print(f"the agent is kept in {_shown(args.dir)}: vmem inspect {args.dir} (--html FILE for a page)")
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
    _add_color(p)
    _add_progress(p)


CHAT_HELP = """commands:
  /map              the context map (what is in the window now)
  /core             the core memory blocks
  /summary          the recursive summary of evicted messages
  /recall QUERY     search the conversation history (recall storage)
  /archival QUERY   search archival memory
  /help             this help
  /quit             leave (Ctrl-D too)
anything else is a message to the agent"""


def _server(args: argparse.Namespace) -> tuple[str, str | None]:
    model = args.model or os.environ.get("VMEM_MODEL")
    if not model:
        raise CliError("no model: pass --model NAME or set VMEM_MODEL", EXIT_USAGE)
    base_url = args.base_url or os.environ.get("VMEM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not base_url and not (os.environ.get("VMEM_API_KEY") or os.environ.get("OPENAI_API_KEY")):
        raise CliError("no server: pass --base-url URL (e.g. http://localhost:8080/v1) or set VMEM_BASE_URL; "
                       "or set OPENAI_API_KEY to use api.openai.com", EXIT_USAGE)
    return model, base_url


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

    model, base_url = _server(args)
    path = _agent_dir(args.dir, must_exist=False)
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

    progress = _progress(args.progress)
    driver = progress.wrap(OpenAIDriver(model, base_url=base_url, tool_mode=args.tool_mode, timeout=args.timeout,
                                        merge_system=args.merge_system))
    out = sys.stdout
    color = _color(args.color, out)
    if (url or (path / "vmem.db").exists()) and _has_agent(path):
        agent = Agent.open(path, driver=driver)
        how = "reopened"
        given = (("--system", args.system is not None), ("--window", args.window is not None))
        ignored = [flag for flag, was_given in given if was_given]
        if ignored:
            print(f"note: {' and '.join(ignored)} ignored: {_shown(path)} holds an agent already", file=sys.stderr)
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
        out.write(f"vmem chat: agent {how} in {_shown(path)} · model {model} at {base_url or 'api.openai.com'} · "
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
        for b in memory.store.blocks.all():
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


# ---------------------------------------------------------------------- inspect


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory, or a postgresql://user@host/db?agent=NAME URL")
    p.add_argument("--events", type=int, default=20, metavar="N", help="trace events to show (default 20)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (no network, no "
                                                  "external assets): the context map as a chart and every "
                                                  "memory tier browsable")
    p.add_argument("--limit", type=int, default=2000, metavar="N",
                   help="recall messages and archival passages listed in the HTML page (newest; default 2000)")
    _add_color(p)


@command("inspect", "an agent's memory on disk, without calling its LLM",
         "Show the agent in DIR: its configuration, the context map, the core memory blocks, the recursive "
         "summary, the queue and the working set, the storage counts and the last trace events. The memory "
         "is opened read-only: nothing is written or locked, so it works beside a running agent (it shows "
         "the agent's last committed step).",
         _inspect_args)
def _inspect(args: argparse.Namespace) -> int:
    from vmem.app.inspection import collect, render_html, render_text
    from vmem.kernel import Memory

    if args.events < 0 or args.limit < 1:
        raise CliError("--events must be >= 0 and --limit >= 1", EXIT_USAGE)
    path = _agent_dir(args.dir, must_exist=True)
    html_path = Path(args.html) if args.html else None
    if html_path is not None and not html_path.parent.is_dir():
        raise CliError(f"--html: directory {html_path.parent} does not exist", EXIT_USAGE)
    memory = Memory.open(path, read_only=True)
    try:
        view = collect(memory, events=args.events, limit=args.limit)
    finally:
        memory.close()
    print(render_text(view, color=_color(args.color, sys.stdout)))
    if html_path is not None:
        html_path.write_text(render_html(view), encoding="utf-8")
        print(f"\nwrote {html_path} ({html_path.stat().st_size:,} bytes)")
    return EXIT_OK


# ---------------------------------------------------------------------- Letta agent files


def _import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE.af", help="a Letta agent file")
    p.add_argument("dir", metavar="DIR", help="a new (or empty) directory: the agent's, or a directory per agent in "
                                              "it (named after each) when the file holds several; or a "
                                              "postgresql://user@host/db?agent=NAME URL for one agent (--agent)")
    p.add_argument("--agent", metavar="NAME", help="import only this agent (its name, or its id in the file such as "
                                                   "agent-0), into DIR itself")
    p.add_argument("--window", type=int, metavar="TOKENS", help="the context window, instead of the file's")
    p.add_argument("--max-mb", type=float, default=64.0, metavar="MB",
                   help="refuse a file larger than this many MiB (default 64)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the warnings and where the agents went")


@command("import", "create vmem agents from a Letta agent file (.af)",
         "Create a vmem agent for each agent of a Letta agent file (github.com/letta-ai/agent-file): its system "
         "instructions, core memory blocks (limits, descriptions, read-only), context window, the messages in its "
         "context (into the queue and recall storage, tool calls with their results, timestamps), its older history "
         "(recall storage, behind its summary) and its tools (Letta's memory tools are vmem's built-ins; any other "
         "tool is kept as data: its schema and source code are stored, never run). Prints one report of what was "
         "mapped, kept as data and skipped. Nothing is half-created: on any error DIR is left as it was.",
         _import_args)
def _import(args: argparse.Namespace) -> int:
    from vmem.app.agentfile import AgentFileError
    from vmem.app.letta_bridge import LettaBridgeError, import_agent_file

    path = Path(args.file)
    if not path.exists():
        raise CliError(f"{path} does not exist", EXIT_USAGE)
    if args.max_mb <= 0 or (args.window is not None and args.window < 1):
        raise CliError("--max-mb and --window must be positive", EXIT_USAGE)
    try:
        result = import_agent_file(path, args.dir, agent=args.agent, window=args.window,
                                   max_bytes=int(args.max_mb * 2**20))
    except AgentFileError as exc:
        raise CliError(f"cannot import {exc}") from None
    except LettaBridgeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    report = result.report
    if args.quiet:
        for e in report.warnings:
            print(f"warning: {e.subject}: {e.detail}")
    else:
        print(report.format())
    names = {a.id: a.name for a in result.file.agents}
    for aid, where in result.directories.items():
        print(f"imported {names[aid]} ({aid}) into {_shown(where)}: vmem inspect {where}")
    return EXIT_OK


def _export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="an agent's directory, or a directory of agents (as vmem import makes "
                                              "for a file with several), or a postgresql://user@host/db?agent=NAME URL")
    p.add_argument("file", metavar="FILE.af", help="the agent file to write")
    p.add_argument("--force", action="store_true", help="replace FILE.af if it exists")


@command("export", "write vmem agents as a Letta agent file (.af)",
         "Write the agent in DIR (or every agent in DIR's subdirectories) as a Letta agent file: system, blocks, "
         "the queue as the context, the rest of recall storage as history, the recursive summary as Letta's "
         "summary message, the tools (what an import kept, given back) and vmem's archival passages in the "
         "x_vmem extension field, which Letta ignores. The agents are opened read-only (it works beside a "
         "running agent) and the file is written atomically.",
         _export_args)
def _export(args: argparse.Namespace) -> int:
    from vmem.app.letta_bridge import LettaBridgeError, export_agent_file

    source = _agent_dir(args.dir, must_exist=False)
    if isinstance(source, str):
        if not _has_agent(source):
            raise CliError(f"{_shown(source)} holds no vmem agent", EXIT_USAGE)
    elif not source.is_dir():
        raise CliError(f"{source} {'is not a directory' if source.exists() else 'does not exist'}", EXIT_USAGE)
    target = Path(args.file)
    if target.exists() and not args.force:
        raise CliError(f"{target} exists; pass --force to replace it", EXIT_USAGE)
    if not target.parent.is_dir():
        raise CliError(f"directory {target.parent} does not exist", EXIT_USAGE)
    try:
        result = export_agent_file(source, target)
    except LettaBridgeError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    for note in result.notes:
        print(f"note: {note}")
    for a in result.file.agents:
        print(f"{a.name}: {len(a.blocks)} blocks, {len(a.in_context)} messages in context, {len(a.out_of_context)} "
              f"in history, summary {len(a.summary)} characters, {len(a.passages)} archival passages, "
              f"{len(a.tools)} tools")
    print(f"wrote {target} ({target.stat().st_size:,} bytes)")
    return EXIT_OK


# ---------------------------------------------------------------------- migrate


def _migrate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("src", metavar="SRC", help="the agent: its directory or its postgresql://...?agent=NAME URL")
    p.add_argument("dst", metavar="DST", help="where to copy it: a new directory or a postgresql://...?agent=NAME "
                                              "URL that holds no agent")


@command("migrate", "copy an agent between a directory and a PostgreSQL database (either way)",
         "Copy the agent in SRC to DST: every message, passage (with its embedding and interval), block, the "
         "kernel's saved state and the trace, ids kept. SRC is read in one consistent state (a directory is "
         "locked for it; a PostgreSQL agent is read in one snapshot beside its workers). The copy stands only if "
         "both memories have the same digest (Memory.digest()); otherwise, or on any error, nothing is left at DST.",
         _migrate_args)
def _migrate(args: argparse.Namespace) -> int:
    from vmem.kernel import KernelError, migrate

    src = _agent_dir(args.src, must_exist=True)
    dst = _agent_dir(args.dst, must_exist=False)
    try:
        digest = migrate(src, dst)
    except KernelError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    print(f"copied {_shown(src)} to {_shown(dst)}: digest {digest[:16]} on both")
    return EXIT_OK


# ---------------------------------------------------------------------- mcp


def _mcp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory (made by vmem import or vmem chat) or its "
                                              "postgresql://user@host/db?agent=NAME URL; a new or empty "
                                              "one gets a new memory with persona and human blocks")
    p.add_argument("--http", action="store_true", help="serve streamable HTTP on the loopback interface instead of "
                                                        "stdio (the URL is printed on stderr)")
    p.add_argument("--host", default="127.0.0.1", choices=("127.0.0.1", "::1", "localhost"),
                   help="with --http: the loopback address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="with --http: the port (default 8765; 0: any free one)")
    p.add_argument("--lock-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long a call waits while another writer has the memory (default 10)")
    p.add_argument("--token", metavar="TOKEN", default=os.environ.get("VMEM_MCP_TOKEN"),
                   help="with --http: the bearer token clients must send (default: $VMEM_MCP_TOKEN, else the one in "
                        "DIR/mcp.token, generated with mode 0600 and printed on first use)")
    p.add_argument("--no-auth", action="store_true",
                   help="with --http: serve without a token (any local user or process can then read and write the "
                        "memory: only on a trusted machine)")
    p.add_argument("--hold", type=float, default=2.0, metavar="SECONDS",
                   help="keep the memory open this long after a call, for the next one (default 2; 0: close after "
                        "each call); other writers wait meanwhile")


@command("mcp", "serve an agent's memory to MCP clients (coding assistants, desktop apps, agent frameworks)",
         "Serve the memory in DIR over the Model Context Protocol, on stdio (what an MCP client's configuration "
         "launches) or with --http on streamable HTTP at http://127.0.0.1:PORT/mcp. Tools: the memory functions "
         "(core_memory_append, core_memory_replace, memory_insert, memory_rethink, archival_memory_insert, "
         "archival_memory_search, conversation_search); a bad call is answered as a function error and changes "
         "nothing. Resources: the core memory blocks, vmem://blocks/LABEL. A call opens the memory for writing and "
         "the server keeps it open while calls keep coming (--hold), so several clients (and vmem chat) take "
         "turns as writers and see each other's writes.",
         _mcp_args)
def _mcp(args: argparse.Namespace) -> int:
    if args.lock_timeout < 0 or args.hold < 0 or not 0 <= args.port < 65536:
        raise CliError("--lock-timeout and --hold must be >= 0, --port between 0 and 65535", EXIT_USAGE)
    path = _agent_dir(args.dir, must_exist=False)
    if (not _has_agent(path)) if isinstance(path, str) else (not path.exists() or not any(path.iterdir())):
        from vmem.kernel import Memory

        Memory.create(path, system=DEFAULT_SYSTEM, blocks=DEFAULT_BLOCKS).close()
        print(f"vmem mcp: created a new memory in {_shown(path)} (blocks: {', '.join(DEFAULT_BLOCKS)})",
              file=sys.stderr)
    elif not _has_agent(path):
        raise CliError(f"{path} is not empty and holds no vmem agent; name an agent's directory or a new one",
                       EXIT_USAGE)
    try:
        import anyio

        from vmem.app.mcp_server import MemoryService, build_server, serve_http, serve_stdio
    except ImportError as exc:
        raise CliError(f"vmem mcp needs the mcp package ({exc.name or exc} is missing): pip install mcp") from None
    service = MemoryService(path, lock_timeout=args.lock_timeout, hold=args.hold)
    server = build_server(service)
    if not args.http:
        anyio.run(serve_stdio, server, service)
        return EXIT_OK

    from vmem.app.mcp_server import TOKEN_FILE, http_token

    token, how = args.token, "the token given"
    if args.no_auth:
        if args.token:
            raise CliError("--no-auth and --token contradict each other", EXIT_USAGE)
        token, how = None, "no authentication (--no-auth): any local process can use this memory"
    elif not token:
        try:
            token, generated = http_token(path)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        how = (f"bearer token {token} (generated and stored in {path / TOKEN_FILE}, mode 0600; shown this once)"
               if generated else f"the bearer token in {path / TOKEN_FILE}")
    elif len(token) < 16:
        raise CliError("--token: use at least 16 characters", EXIT_USAGE)

    def ready(url: str) -> None:
        print(f"vmem mcp: serving {_shown(path)} at {url} (Ctrl-C to stop); clients authenticate with {how}",
              file=sys.stderr, flush=True)

    try:
        anyio.run(lambda: serve_http(server, service, host=args.host, port=args.port, ready=ready, token=token))
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    return EXIT_OK


# ---------------------------------------------------------------------- consolidate


def _consolidate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory")
    p.add_argument("--model", help="the daemon's model (default: $VMEM_MODEL); it may be smaller than the agent's")
    p.add_argument("--base-url", help="its OpenAI-compatible server, e.g. http://localhost:8080/v1 (default: "
                                      "$VMEM_BASE_URL, then $OPENAI_BASE_URL); the key comes from $VMEM_API_KEY or "
                                      "$OPENAI_API_KEY")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the server (default 300)")
    p.add_argument("--loop", action="store_true", help="keep running: consolidate whenever it is due (Ctrl-C stops)")
    p.add_argument("--every", type=int, default=5, metavar="TURNS",
                   help="with --loop: run once this many new user turns wait (default 5; 0: only when idle)")
    p.add_argument("--idle", type=float, default=30.0, metavar="SECONDS",
                   help="with --loop: also run once the store has not changed for this long (default 30; 0: never)")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="with --loop: how often to look for new turns (default 1)")
    p.add_argument("--max-runs", type=int, default=None, metavar="N", help="with --loop: stop after N runs")
    p.add_argument("--until-idle", action="store_true",
                   help="with --loop: run until no message waits, then stop (without it, a run waits for --every or "
                        "--idle)")
    p.add_argument("--lock-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long a run waits for another writer (vmem chat, vmem mcp) to release the memory before "
                        "its answer is dropped and its turns wait for the next run (default 10)")
    p.add_argument("--checks", type=int, default=4, metavar="N",
                   help="yes/no calls per run asking whether a new fact replaces an old one (default 4)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a line")


def _report_line(report: Any) -> str:
    if report.stale:
        return "stale: another run consolidated these messages first; nothing applied"
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
    kinds: dict[str, int] = {}
    for op in report.ops:
        kinds[op["op"]] = kinds.get(op["op"], 0) + 1
    applied = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "nothing"
    line = (f"messages {report.start + 1}-{report.end}: {report.proposed} proposed, applied {applied}"
            f"{'; skipped ' + skipped if skipped else ''}")
    return line + (f" (the answer was unreadable: {report.error})" if report.error else "")


@command("consolidate", "consolidate an agent's memory in the background (core memory, dated facts, supersessions)",
         "The kernel's kswapd as its own process: read the messages of the agent in DIR since the last run, ask "
         "the model (any OpenAI-compatible server; a small local model works) for what to keep, and apply what "
         "passes the checks as one transaction: core memory lines about the user and the agent, archival facts "
         "dated by the turns they come from, facts that replace older ones (the old ones are marked superseded, "
         "never deleted), near-duplicates merged. One run by default; --loop keeps going. The model is called "
         "without holding the memory; the run then waits up to --lock-timeout for the agent to let go of it "
         "(a running vmem chat holds it: use the in-process daemon there).",
         _consolidate_args)
def _consolidate(args: argparse.Namespace) -> int:
    from vmem.app.consolidate import run_loop, run_once
    from vmem.kernel.drivers import OpenAIDriver

    if args.lock_timeout < 0 or args.every < 0 or args.idle < 0 or args.interval <= 0 or args.checks < 0 \
            or (args.max_runs is not None and args.max_runs < 1):
        raise CliError("--lock-timeout, --every, --idle and --checks must be >= 0, --interval > 0, --max-runs >= 1",
                       EXIT_USAGE)
    if not args.loop and (args.max_runs is not None or args.until_idle):
        raise CliError("--max-runs and --until-idle go with --loop", EXIT_USAGE)
    path = _agent_dir(args.dir, must_exist=True)
    if not _has_agent(path):
        raise CliError(f"{path} holds a vmem store but no agent", EXIT_USAGE)
    model, base_url = _server(args)
    driver = OpenAIDriver(model, base_url=base_url, timeout=args.timeout)

    def show(report: Any) -> None:
        if args.json:
            print(json.dumps(dataclasses.asdict(report), ensure_ascii=False, default=str), flush=True)
        else:
            print(f"vmem consolidate: {_report_line(report)}", flush=True)

    def failed(exc: BaseException) -> None:
        print(f"vmem consolidate: run failed, will retry: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)

    try:
        if not args.loop:
            report = run_once(path, driver, lock_timeout=args.lock_timeout, checks=args.checks)
            if report is None:
                print("vmem consolidate: nothing new since the last run", flush=True)
            else:
                show(report)
            return EXIT_OK
        run_loop(path, driver, every=args.every, idle=args.idle or None, interval=args.interval,
                 max_runs=args.max_runs, until_idle=args.until_idle, lock_timeout=args.lock_timeout,
                 checks=args.checks, on_report=show, on_error=failed)
        return EXIT_OK
    finally:
        driver.close()


# ---------------------------------------------------------------------- eval


def _eval_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    loc = sub.add_parser(
        "locomo", help="LoCoMo retrieval: recall@k of evidence turns",
        description="Store every turn of each LoCoMo conversation as a page, search with each question, and "
                    "report recall@k of the evidence turns per question category and overall, beside the "
                    "LoCoMo paper's DRAGON retriever (Table 3: R@5 58.8, R@10 67.5, R@25 79.9).")
    loc.add_argument("path", metavar="PATH", nargs="?", default=None,
                     help="a LoCoMo JSON file (default: ../shared/data/locomo/locomo_dev.json from the "
                          "current directory)")
    loc.add_argument("--json", action="store_true",
                     help='print {mode: {"overall": {"5": r, ...}, "by_category": {category: {"5": r, ...}}}} '
                          "with recall as a fraction")
    loc.add_argument("--modes", default="text,vector,hybrid",
                     help="comma-separated retrieval modes (default text,vector,hybrid; also rrf and MODE+context)")
    loc.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    qa = sub.add_parser(
        "qa", help="LoCoMo question answering: F1 of a real model's answers, vmem beside truncation and RAG",
        description="Ask a model LoCoMo's questions about each conversation, side by side: (a) the whole "
                    "conversation in the prompt, (b) the newest turns that fit --window, (c) top-k retrieval "
                    "into that window, (d) the vmem agent with its memory functions, (e) vmem with prefetch "
                    "only, (f) vmem after its consolidation daemon. Scored with the LoCoMo paper's token F1, per "
                    "question category; prompt tokens and seconds per question. The conversation goes into "
                    "vmem without model calls (an extractive summarizer writes the flushes' summaries); the "
                    "model answers the questions only. See vmem.app.qa for the protocol.",
        epilog="example: vmem eval qa --base-url http://127.0.0.1:8080/v1 --model qwen --configs b,c,d,e "
               "--limit 20 --window 4096")
    qa.add_argument("path", metavar="PATH", nargs="?", default=None,
                    help="a LoCoMo JSON file (default: ../shared/data/locomo/locomo_dev.json)")
    qa.add_argument("--base-url", help="the OpenAI-compatible server (default: $VMEM_BASE_URL, then "
                                       "$OPENAI_BASE_URL); the key comes from $VMEM_API_KEY or $OPENAI_API_KEY")
    qa.add_argument("--model", help="the model name to send (default: $VMEM_MODEL)")
    qa.add_argument("--tool-mode", choices=("auto", "native", "json"), default=None,
                    help="how the agent's tools reach the model (default: $VMEM_TOOL_MODE or auto)")
    qa.add_argument("--configs", default="a,b,c,d,e,f",
                    help="comma-separated configurations, letters a-f (default all)")
    qa.add_argument("--window", type=int, default=4096, help="the context window of (b)-(f), tokens (default 4096)")
    qa.add_argument("--reserve", type=int, default=512, help="tokens kept free for the answer (default 512)")
    qa.add_argument("--limit", type=int, default=None,
                    help="a fixed random sample of this many questions, spread across the categories (--seed)")
    qa.add_argument("--questions", default=None, help="comma-separated question ids <sample_id>:<index>")
    qa.add_argument("--conversations", default=None, help="comma-separated sample ids (e.g. conv-26,conv-30)")
    qa.add_argument("--categories", default=None, help="comma-separated categories 1-5 (1 multi-hop, 2 temporal, "
                                                       "3 open-domain, 4 single-hop, 5 adversarial)")
    qa.add_argument("--seed", type=int, default=0, help="the sample's and the adversarial options' seed (default 0)")
    qa.add_argument("--rag-k", type=int, default=0, help="turns retrieved for (c); 0 fills the window (default)")
    qa.add_argument("--prefetch", type=int, default=10, help="pages prefetched per question for (e) (default 10)")
    qa.add_argument("--workset", type=int, default=0,
                    help="working-set tokens for (e); 0: a third of the window (default)")
    qa.add_argument("--max-steps", type=int, default=4, help="LLM calls per question for the agent (default 4)")
    qa.add_argument("--answer-tokens", type=int, default=32, help="max tokens of an answer (default 32)")
    qa.add_argument("--agent-tokens", type=int, default=256,
                    help="max tokens of one LLM call of the agent, which writes tool calls (default 256)")
    qa.add_argument("--timeout", type=float, default=1800.0,
                    help="seconds to wait for one LLM call (default 1800: a CPU reading a long prompt is slow)")
    qa.add_argument("--json", action="store_true",
                    help="print the whole report as strict JSON: settings, per configuration its overall and "
                         "per-category figures, and every question's outcome")
    qa.add_argument("--log", metavar="FILE", type=Path, default=None,
                    help="append each question's outcome to FILE as a JSON line as soon as it is scored "
                         "(a long run's partial results)")
    progress = qa.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="a progress bar on stderr (default: when stderr is a terminal)")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


@command("eval", "evaluations (LoCoMo retrieval recall@k; LoCoMo question answering)",
         "Evaluate vmem on a benchmark's data: retrieval (locomo), answers end to end (qa). The data is not "
         "part of the repository.",
         _eval_args)
def _eval(args: argparse.Namespace) -> int:
    from vmem.app.evaluation import DEFAULT_LOCOMO_PATH, PAPER_DRAGON, evaluate_locomo, format_report

    if args.benchmark == "qa":
        return _eval_qa(args)
    path = Path(args.path) if args.path else DEFAULT_LOCOMO_PATH
    if not path.is_file():
        raise CliError(f"no LoCoMo file at {path}: pass its path (the data is not in the repository: LoCoMo's "
                       "data/locomo10.json from github.com/snap-research/LoCoMo, CC BY-NC 4.0)", EXIT_USAGE)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    ks = (5, 10, 25)
    try:
        result = evaluate_locomo(path, modes, ks, progress=not args.no_progress)
    except ValueError as exc:
        if "mode" in str(exc):
            raise CliError(f"--modes: {exc}", EXIT_USAGE) from None
        raise CliError(f"{path} is not a LoCoMo file: {exc}") from None
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CliError(f"{path} is not a LoCoMo file: missing or malformed {exc}") from None
    if args.json:
        shaped = {m: {"overall": r["overall"], "by_category": r["by_category"]} for m, r in result.items()}
        print(json.dumps(shaped, indent=2))
        return EXIT_OK
    first: dict[str, Any] = next(iter(result.values()), {})
    print(f"LoCoMo retrieval, {path}: {first.get('questions', 0)} questions with evidence; recall@k of the "
          f"evidence turns, percent")
    print(format_report(result, reference={k: PAPER_DRAGON[k] for k in ks}))
    return EXIT_OK


# ---------------------------------------------------------------------- reembed


def _reembed_args(p: argparse.ArgumentParser) -> None:
    from vmem.local_models import EMBEDDERS

    names = [n for n in EMBEDDERS if n != "openai"]
    p.add_argument("dir", metavar="DIR", help="an agent's directory (or any vmem store)")
    p.add_argument("--embedder", metavar="NAME", default="hash",
                   help=f"the embedder to use from now on: {', '.join(names)} (default: %(default)s, the built-in "
                        "HashEmbedder); minilm and e5-small need pip install \"vmem[minilm]\" / \"vmem[e5]\"")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")


@command("reembed", "re-embed an agent's archival passages with another embedder (with a progress bar)",
         "Recompute the vector of every archival passage with another embedder, in one transaction: an "
         "interruption leaves the store as it was, and the vectors of two embedders never mix. The store "
         "records its embedder, and later opens (vmem chat, inspect, mcp, Memory.open) use it. Nothing "
         "else changes: the texts, the text index, recall storage and core memory stay as they are.",
         _reembed_args)
def _reembed(args: argparse.Namespace) -> int:
    from vmem.embed import EmbedderError
    from vmem.local_models import EMBEDDERS, make_embedder
    from vmem.storage import MemoryDir

    if args.embedder not in EMBEDDERS or args.embedder == "openai":
        names = ", ".join(n for n in EMBEDDERS if n != "openai")
        raise CliError(f"--embedder: unknown embedder {args.embedder!r} (use one of {names})", EXIT_USAGE)
    path = _agent_dir(args.dir, must_exist=True)
    embedder = make_embedder(args.embedder)
    try:
        embedder.embed(["vmem"])  # load the model now: a missing package fails before the store is touched
    except EmbedderError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    bar: Any = None

    def progress(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=total, unit="passage", desc="re-embedding", disable=args.no_progress, leave=False)
        bar.update(done - bar.n)

    try:
        with MemoryDir.open(path, embedder=embedder, create=False, on_reembed=progress) as store:
            n = len(store.archival)
    finally:
        if bar is not None:
            bar.close()
    if bar is None:
        print(f"{path}: its {n} passages are already embedded by {embedder.name}: nothing to do")
    else:
        print(f"{path}: re-embedded {n} passages with {embedder.name}")
    return EXIT_OK


def _csv(text: str | None) -> list[str] | None:
    return None if text is None else [t.strip() for t in text.split(",") if t.strip()]


def _eval_qa(args: argparse.Namespace) -> int:
    from vmem.app.evaluation import DEFAULT_LOCOMO_PATH
    from vmem.app.qa import CONFIGS, QASettings, format_qa_report, load_dialogues, run_qa, select_items
    from vmem.kernel.drivers import OpenAIDriver, RetryPolicy

    model, base_url = _server(args)
    path = Path(args.path) if args.path else DEFAULT_LOCOMO_PATH
    if not path.is_file():
        raise CliError(f"no LoCoMo file at {path} (the data is not in the repository: pass its path)", EXIT_USAGE)
    configs = _csv(args.configs) or []
    bad = [c for c in configs if c not in CONFIGS]
    if bad or not configs:
        raise CliError(f"--configs: {', '.join(bad) or 'none given'}: choose among {', '.join(CONFIGS)}", EXIT_USAGE)
    try:
        settings = QASettings(window=args.window, reserve=args.reserve, answer_tokens=args.answer_tokens,
                              agent_tokens=args.agent_tokens, max_steps=args.max_steps, rag_k=args.rag_k, prefetch=args.prefetch,
                              workset=args.workset, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    try:
        dialogues = load_dialogues(path)
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CliError(f"{path} is not a LoCoMo file: {exc}") from None
    try:
        categories = [int(c) for c in _csv(args.categories) or []] if args.categories else None
    except ValueError:
        raise CliError(f"--categories: {args.categories!r}: give numbers 1-5, comma-separated", EXIT_USAGE) from None
    try:
        items = select_items(dialogues, conversations=_csv(args.conversations), questions=_csv(args.questions),
                             categories=categories, limit=args.limit, seed=args.seed)
    except ValueError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    if not items:
        raise CliError("no question selected", EXIT_USAGE)

    def make_driver(max_tokens: int) -> OpenAIDriver:
        return OpenAIDriver(model, base_url=base_url, tool_mode=args.tool_mode, timeout=args.timeout,
                            retry=RetryPolicy(max_attempts=2), params={"max_tokens": max_tokens, "temperature": 0})

    progress = sys.stderr.isatty() if args.progress is None else args.progress
    with contextlib.ExitStack() as stack:
        log = None
        if args.log is not None:
            try:
                log = stack.enter_context(open(args.log, "a", encoding="utf-8"))
            except OSError as exc:
                raise CliError(f"--log {args.log}: {exc.strerror or exc}", EXIT_USAGE) from None

        def keep(outcome: Any) -> None:
            if log is not None:
                log.write(json.dumps(dataclasses.asdict(outcome), allow_nan=False) + "\n")
                log.flush()

        report = run_qa(dialogues, items, configs, settings, make_driver, progress=progress, on_outcome=keep)
    if args.json:
        print(json.dumps(report.to_dict(), indent=1, allow_nan=False))
        return EXIT_OK
    convs = sorted({i.conversation for i in items})
    print(f"LoCoMo QA, {path}: {len(items)} questions from {', '.join(convs)}; model {model}; window "
          f"{settings.window}; F1 percent by category (questions), prompt tokens and seconds per question; "
          f"{report.seconds:.0f} s in all")
    print(format_qa_report(report))
    return EXIT_OK


# ---------------------------------------------------------------------- bench


def _bench_args(p: argparse.ArgumentParser) -> None:
    from vmem.app.benchrun import SUITES

    p.add_argument("--quick", action="store_true", help="a smaller run: fewer sizes and rounds of every suite")
    p.add_argument("--json", action="store_true",
                   help='print a JSON list, one object a figure: {"name", "value", "unit", "baseline", '
                        '"ratio", "target", "met"}')
    p.add_argument("--only", metavar="SUITE", action="append", choices=[s.name for s in SUITES],
                   help="run only this suite (repeatable): " + ", ".join(s.name for s in SUITES))
    p.add_argument("--bench-dir", metavar="DIR", help="the checkout's bench/ folder (default: ./bench)")
    p.add_argument("--locomo", metavar="FILE", help="LoCoMo's data for the search, page-fault and retrieval suites "
                                                   "(default: ../shared/data/locomo/locomo_dev.json beside the checkout)")
    p.add_argument("--nested-kv", metavar="DIR", help="MemGPT's nested key-value data for the nested-kv suite "
                                                     "(default: ../shared/data/nested_kv beside the checkout)")


def _check_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory")


@command("check", "verify an agent's memory on disk: every record, the indexes, the invariants",
         "Verify the agent in DIR without changing it: every message, passage, block, state and journal "
         "record against the checksum written with it, SQLite's integrity_check, the text and vector "
         "indexes against the database, the kernel's invariants, and whether committed transactions are "
         "missing (a lost WAL tail). Prints what is damaged and exits 1; nothing is repaired (restore the "
         "directory from a backup). Opened read-only: it works beside a running agent.",
         _check_args)
def _check(args: argparse.Namespace) -> int:
    from vmem import InvariantError
    from vmem.kernel import Memory

    path = _agent_dir(args.dir, must_exist=True)
    memory = Memory.open(path, read_only=True)
    try:
        problems = memory.store.verify()
        try:
            memory.check()
        except InvariantError as exc:
            problems.append(f"kernel: {exc}")
        counts = f"{memory.stats.recall} messages, {memory.stats.archival} passages, " \
                 f"{len(memory.block_labels())} blocks, {memory.store.version} commits"
    finally:
        memory.close()
    if not problems:
        print(f"{path}: ok ({counts})")
        return EXIT_OK
    print(f"{path}: {len(problems)} problem(s) ({counts}):")
    for problem in problems:
        print(f"  {problem}")
    return EXIT_FAILURE


@command("bench", "run every benchmark and print one table (each figure beside its same-run baseline)",
         "Run the benchmark suites of a source checkout (bench/): the C core against its pure-Python "
         "reference, HNSW page-in against exact search, storage, LoCoMo retrieval, the kernel's per-step "
         "overhead against a naive kernel, and the nested key-value workload. Each figure is printed with "
         "its baseline measured in the same run, the ratio, the target and whether it is met. How long it "
         "takes depends on the data present: LoCoMo's suites (search, page-fault, retrieval) and nested-kv "
         "are most of it, and are skipped, saying which option gives their data, when it is absent. "
         "--quick runs fewer sizes and rounds of every suite.",
         _bench_args)
def _bench(args: argparse.Namespace) -> int:
    from vmem.app.benchrun import find_bench_dir, print_table, run_suites

    try:
        bench_dir = find_bench_dir(args.bench_dir)
    except FileNotFoundError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    figures = run_suites(bench_dir, quick=args.quick, only=set(args.only or ()),
                         data={"locomo": args.locomo, "nested-kv": args.nested_kv})
    if args.json:
        print(json.dumps(figures, indent=1, allow_nan=False))  # strict JSON: null, never NaN
    else:
        print_table(figures)
    failed = [f["name"] for f in figures if f["name"].endswith("suite failed")]
    return EXIT_FAILURE if failed else EXIT_OK  # unmet targets are reported, not failures


# ---------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command."""
    codes = "\n".join(f"  {code:<4}{text}" for code, text in EXIT_CODES.items())
    parser = argparse.ArgumentParser(
        prog="vmem",
        description="vmem: an embedded, OS-style memory kernel for LLM agents (MemGPT-style paging over a C "
                    "core). Start with `vmem demo`.",
        epilog=f"exit codes:\n{codes}\n\nerrors are one line on stderr; set VMEM_DEBUG=1 to see tracebacks.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    from vmem import __version__

    parser.add_argument("--version", action="version", version=f"vmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.description)
        cmd.configure(p)
        p.set_defaults(run=cmd.run)
    return parser


def _describe(exc: BaseException) -> tuple[str, int]:
    """A one-line message and exit code for an exception escaping a command."""
    from vmem import VmemError
    from vmem.storage import (
        CorruptStoreError,
        ForeignFileError,
        SchemaVersionError,
        StoreLockedError,
        StoreNotFoundError,
        VmemStorageError,
    )

    if isinstance(exc, CliError):
        return str(exc), exc.code
    if isinstance(exc, StoreNotFoundError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, (CorruptStoreError, ForeignFileError)):
        return f"the store is damaged or not a vmem store: {exc}", EXIT_FAILURE
    if isinstance(exc, StoreLockedError):
        return f"{exc}; close it there first", EXIT_FAILURE
    if isinstance(exc, SchemaVersionError):
        return f"{exc} (written by a newer vmem?)", EXIT_FAILURE
    if isinstance(exc, (VmemStorageError, VmemError)):
        return f"{type(exc).__name__}: {exc}", EXIT_FAILURE
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", EXIT_FAILURE
    return f"unexpected {type(exc).__name__}: {exc} (a bug in vmem; VMEM_DEBUG=1 shows the traceback)", EXIT_FAILURE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``vmem`` command line; returns the exit code (see ``vmem --help``)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("\nvmem: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `vmem demo | head`: the reader left
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - silence the flush at exit
        except OSError:
            pass
        return EXIT_OK
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        if os.environ.get("VMEM_DEBUG"):
            traceback.print_exc()
        message, code = _describe(exc)
        print(f"vmem: error: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
