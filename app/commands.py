"""What every ``vmem`` command shares: the registry, errors and exit codes, and opening an agent.

A command is one function decorated with :func:`command`, in one of the ``cli_*`` modules
(grouped by what they work on); :mod:`vmem.app.cli` imports those modules, builds the parser
from :data:`COMMANDS` and runs the chosen one.

Interface::

    @command(name, help, description, configure)     # registers run(args) -> exit code
    raise CliError("one line for the user", EXIT_USAGE)
    agent_location(text, must_exist=...)             # a directory (Path) or a PostgreSQL URL
    shown(location); has_agent(location)
    server_of(args)                                  # (model, base URL) from flags or environment
    add_color(p); use_color(choice, stream); add_progress(p); make_progress(choice)
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TextIO

if TYPE_CHECKING:
    from vmem.app.progress import Progress

__all__ = ["COMMANDS", "DEFAULT_BLOCKS", "DEFAULT_SYSTEM", "EXIT_CODES", "EXIT_FAILURE", "EXIT_INTERRUPTED",
           "EXIT_OK", "EXIT_USAGE", "CliError", "Command", "add_color", "add_progress", "agent_location",
           "command", "has_agent", "make_progress", "server_of", "shown", "use_color"]

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


def use_color(choice: str, stream: TextIO) -> bool:
    if choice == "always":
        return True
    if choice == "never" or os.environ.get("NO_COLOR"):
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def add_color(p: argparse.ArgumentParser) -> None:
    p.add_argument("--color", choices=("auto", "always", "never"), default="auto",
                   help="colour the output: auto (default) when writing to a terminal")


def add_progress(p: argparse._ActionsContainer) -> None:  # a parser or an argument group
    p.add_argument("--progress", choices=("auto", "always", "never"), default="auto",
                   help="while the model thinks, a live line on stderr with the elapsed time, then the call's "
                        "seconds, tokens and tokens/s: auto (default) when stderr is a terminal, never when piped")


def make_progress(choice: str) -> "Progress":
    from vmem.app.progress import Progress

    enabled = choice == "always" or (choice == "auto" and Progress.auto(sys.stderr))
    return Progress(sys.stderr, enabled=enabled)


# ---------------------------------------------------------------------- opening agents


def agent_location(path: str, *, must_exist: bool) -> Any:
    """The agent's location: a directory (Path), or a PostgreSQL URL (str) checked for form."""
    from vmem.storage import is_url

    if not path.strip():
        raise CliError("the agent's location is empty: name a directory (e.g. ./agent) or a postgresql:// URL",
                       EXIT_USAGE)
    if is_url(path):
        from vmem.storage.postgres_connect import PgLocation

        try:
            PgLocation.parse(path)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        if must_exist and not has_agent(path):
            raise CliError(f"{shown(path)} holds no vmem agent", EXIT_USAGE)
        return path
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise CliError(f"{p} is a file, not an agent directory", EXIT_USAGE)
    if must_exist and not (p / "vmem.db").exists():
        what = "does not exist" if not p.exists() else "holds no vmem agent (no vmem.db)"
        raise CliError(f"{p} {what}", EXIT_USAGE)
    return p


def shown(location: Any) -> str:
    """A location for messages (a URL without its password)."""
    from vmem.storage import display

    return display(location)


def has_agent(path: Any) -> bool:
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


def server_of(args: argparse.Namespace) -> tuple[str, str | None]:
    """The model and server URL a command calls: ``--model``/``--base-url``, else VMEM_MODEL and
    VMEM_BASE_URL (or OPENAI_BASE_URL); CliError (usage) when no model, or no server and no API key."""
    model = args.model or os.environ.get("VMEM_MODEL")
    if not model:
        raise CliError("no model: pass --model NAME or set VMEM_MODEL", EXIT_USAGE)
    base_url = args.base_url or os.environ.get("VMEM_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    if not base_url and not (os.environ.get("VMEM_API_KEY") or os.environ.get("OPENAI_API_KEY")):
        raise CliError("no server: pass --base-url URL (e.g. http://localhost:8080/v1) or set VMEM_BASE_URL; "
                       "or set OPENAI_API_KEY to use api.openai.com", EXIT_USAGE)
    return model, base_url
