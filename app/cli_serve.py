"""``vmem mcp`` and ``vmem consolidate``: an agent's memory served to other programs, as its own process.

``mcp`` serves the memory functions and blocks to MCP clients (stdio or streamable HTTP);
``consolidate`` runs the consolidation daemon beside whatever steps the agent. Registered with
:func:`vmem.app.commands.command` when :mod:`vmem.app.cli` imports this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from typing import Any

from vmem.app.commands import (
    DEFAULT_BLOCKS,
    DEFAULT_SYSTEM,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    agent_location,
    command,
    has_agent,
    server_of,
    shown,
)

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
    path = agent_location(args.dir, must_exist=False)
    if (not has_agent(path)) if isinstance(path, str) else (not path.exists() or not any(path.iterdir())):
        from vmem.kernel import Memory

        Memory.create(path, system=DEFAULT_SYSTEM, blocks=DEFAULT_BLOCKS).close()
        print(f"vmem mcp: created a new memory in {shown(path)} (blocks: {', '.join(DEFAULT_BLOCKS)})",
              file=sys.stderr)
    elif not has_agent(path):
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
        print(f"vmem mcp: serving {shown(path)} at {url} (Ctrl-C to stop); clients authenticate with {how}",
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
    p.add_argument("--checks", type=int, default=6, metavar="N",
                   help="yes/no calls per run asking whether a new fact replaces an old one (default 6)")
    p.add_argument("--picks", type=int, default=4, metavar="N",
                   help="calls per run asking which stored fact a new one is about, so that an update sharing no "
                        "word with the fact it replaces is checked too (default 4; 0: none)")
    p.add_argument("--json", action="store_true", help="print one JSON object per run instead of a line")


def _report_line(report: Any) -> str:
    if report.stale:
        return "stale: another run consolidated these messages first; nothing applied"
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(report.skipped.items()))
    kinds: dict[str, int] = {}
    for op in report.ops:
        kinds[op["op"]] = kinds.get(op["op"], 0) + 1
    names = {"block": ("block line", "block lines"), "fact": ("fact", "facts"),
             "supersede": ("supersession", "supersessions")}
    applied = ", ".join(f"{n} {names.get(kind, (kind, kind))[n != 1]}" for kind, n in sorted(kinds.items())) or "nothing"
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
            or args.picks < 0 or (args.max_runs is not None and args.max_runs < 1):
        raise CliError("--lock-timeout, --every, --idle, --checks and --picks must be >= 0, --interval > 0, "
                       "--max-runs >= 1",
                       EXIT_USAGE)
    if not args.loop and (args.max_runs is not None or args.until_idle):
        raise CliError("--max-runs and --until-idle go with --loop", EXIT_USAGE)
    path = agent_location(args.dir, must_exist=True)
    if not has_agent(path):
        raise CliError(f"{path} holds a vmem store but no agent", EXIT_USAGE)
    model, base_url = server_of(args)
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
            report = run_once(path, driver, lock_timeout=args.lock_timeout, checks=args.checks, picks=args.picks)
            if report is None:
                print("vmem consolidate: nothing new since the last run", flush=True)
            else:
                show(report)
            return EXIT_OK
        run_loop(path, driver, every=args.every, idle=args.idle or None, interval=args.interval,
                 max_runs=args.max_runs, until_idle=args.until_idle, lock_timeout=args.lock_timeout,
                 checks=args.checks, picks=args.picks, on_report=show, on_error=failed)
        return EXIT_OK
    finally:
        driver.close()
