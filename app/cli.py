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

The commands live in ``cli_run`` (demo, chat), ``cli_store`` (inspect, import, export, migrate,
reembed, check), ``cli_serve`` (mcp, consolidate) and ``cli_eval`` (eval, bench); what they share
(the registry, :class:`CliError`, the exit codes, opening an agent) in :mod:`vmem.app.commands`.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Sequence

# the commands register themselves as they are imported, in this order (vmem --help's)
from vmem.app import cli_run, cli_store, cli_serve, cli_eval  # noqa: F401
from vmem.app.commands import (
    COMMANDS,
    EXIT_CODES,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    Command,
    command,
)

__all__ = ["main", "build_parser", "CliError", "Command", "COMMANDS", "command", "EXIT_CODES"]

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
        return str(exc), EXIT_FAILURE  # it says which vmem wrote the store, and what to do
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
