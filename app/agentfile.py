"""Letta Agent File (.af) import and export: the format layer, with no kernel.

Interface::

    from app.agentfile import read_agent_file, write_agent_file, dump_agent_file
    af = read_agent_file("evie.af")        # -> AgentFile, or AgentFileError (one line)
    print(af.report)                       # mapped / kept as data / skipped / warnings, per agent
    for agent in af.agents:
        agent.system, agent.blocks, agent.summary, agent.tools, agent.context_window
        agent.in_context                   # the queue: OpenAI chat messages, calls paired
        agent.out_of_context               # the rest of the history: recall storage only
    doc = write_agent_file(af)             # a dict Letta's AgentFileSchema accepts
    dump_agent_file(af, "copy.af")         # the same, written atomically

Reading checks the whole file before it returns, so a caller that creates agents from an
AgentFile never starts on a file that turns out bad halfway. Nothing here runs code: a
tool's source is a string, kept as data.

What the output promises (the tests check each):

1. Every message has role system, user, assistant or tool, a str content and an aware UTC
   timestamp.
2. In each message list, every assistant tool call is followed, contiguously and in call
   order, by exactly one tool message that answers it; a call with no recorded result gets
   a made-up failed result (``synthetic``), reported. No tool message stands alone in the
   queue; a result whose call is nowhere in the file is kept out of context, reported.
3. ``read_agent_file(write_agent_file(af)) == af`` for what the format carries; fields
   that only say where a message came from (``letta_id``, ``dropped``, ``synthetic``)
   are left out of comparisons.

vmem's extension: ``"x_vmem": {"version": 1, "agents": {"agent-0": {"passages": [{"text",
"tags", "created_at"}], "name": ..., "generated": [...], "memory": {"config": {...},
"instructions": ...}}}}`` holds, per agent, the archival passages, the agent's name when
Letta's name rules changed it, which llm_config parts the writer made up because Letta
requires them (so reading does not take them for data), and how a vmem agent's memory was
set up (its MemoryConfig and memory instructions).
The summary needs no extension: it travels as Letta's own summary message.

How Letta stores an agent (letta/schemas/agent_file.py, message.py, system.py,
services/summarizer, in the letta-ai/letta repository, and the published files):

- ``agents[i].messages`` is the exported history, oldest first. ``in_context_message_ids``
  is the context window in order, which can differ from the history's order (a summary
  made later sits at position 1). The other messages are out of context: recall only.
- Context position 0 is always role system: Letta's *compiled* prompt, ``system`` followed
  by a rendering of the blocks and memory statistics, rebuilt after every memory edit
  (older exports keep each stale copy as an out-of-context system message). It is derived
  data: vmem compiles its own from ``system`` and the blocks, so it is not imported.
- The summary is a message, not a field: right after the system message, role ``summary``
  (newer Letta) or ``user`` (older), its text a JSON envelope ``{"type": "system_alert",
  "message": "Note: prior messages ... have been hidden from view ...\\nThe following is
  a summary of the previous ... messages:\\n <summary>", "time": ...}``.
- MemGPT-style agents send what is not the user's own words as role user in JSON
  envelopes: ``{"type": "heartbeat", "reason": ...}`` after a call that asked for a
  heartbeat, ``{"type": "login", ...}``, ``{"type": "system_alert", "message": ...}``; and
  the user's words as ``{"type": "user_message", "message": ...}``. Newer agents send the
  user's words as plain text.
- Replies: ``memgpt_agent`` / ``memgpt_v2_agent`` answer the user with a
  ``send_message(message=...)`` tool call, their assistant text being inner monologue;
  ``letta_v1_agent`` answers in the assistant text. A model's native reasoning is a
  separate ``reasoning`` content part, with a provider signature.
- A tool result is a role tool message with ``tool_call_id`` and a text part (older) or
  ``tool_returns`` (one per call, several when calls ran in parallel). Role ``approval``
  messages hold calls that waited for a human, and the human's answer.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import stat
import tempfile
import types
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, NoReturn, Sequence

__all__ = [
    "AgentFile",
    "AgentFileError",
    "AgentFileTooLarge",
    "AgentSpec",
    "ArchivalPassage",
    "BlockSpec",
    "BrokenReference",
    "ChatMessage",
    "DEFAULT_MAX_BYTES",
    "EXTENSION_KEY",
    "GroupSpec",
    "ImportReport",
    "NotAnAgentFile",
    "ReportEntry",
    "ToolCall",
    "ToolMapping",
    "ToolRule",
    "ToolSpec",
    "VMEM_BUILTINS",
    "builtin_tool",
    "dump_agent_file",
    "read_agent_file",
    "write_agent_file",
]

UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

#: Files larger than this are refused before they are read (pass ``max_bytes`` to raise it).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: The top-level key of vmem's extension, which Letta's loader ignores.
EXTENSION_KEY = "x_vmem"
EXTENSION_VERSION = 1
#: Letta's default block limit (CORE_MEMORY_BLOCK_CHAR_LIMIT), for a block that states none.
DEFAULT_BLOCK_LIMIT = 100_000
#: Written for an agent whose context window is unknown (Letta requires one).
DEFAULT_CONTEXT_WINDOW = 8192

Role = Literal["system", "user", "assistant", "tool"]
MessageKind = Literal["message", "heartbeat", "login", "system_alert", "summary", "tool_result"]
Category = Literal["mapped", "kept", "skipped", "warning", "note"]

#: vmem's built-in memory functions and their parameters (request_heartbeat aside), as
#: kernel/builtins.py declares them; written out so that this module needs no kernel.
VMEM_BUILTINS: Mapping[str, tuple[str, ...]] = types.MappingProxyType({
    "send_message": ("message",),
    "core_memory_append": ("label", "content"),
    "core_memory_replace": ("label", "old_content", "new_content"),
    "memory_insert": ("label", "content", "insert_line"),
    "memory_rethink": ("label", "new_memory"),
    "archival_memory_insert": ("content", "tags"),
    "archival_memory_search": ("query", "tags", "tags_match", "start_date", "end_date", "page"),
    "conversation_search": ("query", "roles", "start_date", "end_date", "page"),
})


# ---------------------------------------------------------------- errors

class AgentFileError(ValueError):
    """A file that cannot be imported; the message is one line: the file, where, why.

    ::

        AgentFileError(ValueError)
         +-- AgentFileTooLarge     over max_bytes (checked before the file is read whole)
         +-- NotAnAgentFile        not UTF-8, not JSON, or not shaped like an agent file
         +-- BrokenReference       a missing, duplicate or dangling id
    """


class AgentFileTooLarge(AgentFileError):
    """The file is larger than ``max_bytes``."""


class NotAnAgentFile(AgentFileError):
    """Not UTF-8 text, not JSON, or JSON that is not a Letta agent file."""


class BrokenReference(AgentFileError):
    """An id is missing, used twice, or names something the file does not define."""


# ---------------------------------------------------------------- frozen JSON

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


def _freeze(value: Any) -> Any:
    """JSON data made read-only: objects become mappingproxies, arrays tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({str(k): _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw(value: Any) -> Any:
    """The inverse of :func:`_freeze`: plain dicts and lists for ``json.dumps``."""
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def _empty() -> Mapping[str, Any]:
    return _EMPTY


def _settle(obj: Any, mappings: Sequence[str] = (), tuples: Sequence[str] = (), times: Sequence[str] = ()) -> None:
    """In a frozen dataclass's __post_init__: freeze JSON given as dicts, make sequences
    tuples, refuse naive timestamps (vmem's stores refuse them too)."""
    for name in mappings:
        v = getattr(obj, name)
        if v is not None and not isinstance(v, types.MappingProxyType):
            object.__setattr__(obj, name, _freeze(v))
    for name in tuples:
        v = getattr(obj, name)
        if not isinstance(v, tuple):
            object.__setattr__(obj, name, tuple(v))
    for name in times:
        v = getattr(obj, name)
        if v is not None and v.tzinfo is None:
            raise ValueError(f"{type(obj).__name__}: {name} must be timezone-aware, got {v.isoformat()}")


# ---------------------------------------------------------------- the report

@dataclass(frozen=True)
class ReportEntry:
    """One line of an :class:`ImportReport`; ``agent`` is a file-local id, None for the file."""

    category: Category
    subject: str
    detail: str
    agent: str | None = None


_CATEGORY_ORDER: tuple[Category, ...] = ("mapped", "kept", "skipped", "warning", "note")


class ImportReport:
    """What an import did with each part of a file, in one list.

    ``mapped``: became a vmem concept (block, queue, summary, built-in function);
    ``kept``: stored as data vmem does not act on (custom tool source, tool rules, Letta
    settings for export); ``skipped``: not imported, with the reason; ``warning``:
    something was wrong and what was done about it; ``note``: a fact worth knowing.
    ``stats`` holds counts per agent id (messages, tool calls paired, ...). The import
    bridge appends its own entries with :meth:`add`.
    """

    def __init__(self, source: str = "") -> None:
        self.source = source
        self.entries: list[ReportEntry] = []
        self.agent_names: dict[str, str] = {}
        self.stats: dict[str, dict[str, int]] = {}

    def add(self, category: Category, subject: str, detail: str, agent: str | None = None) -> None:
        """Append one entry."""
        if category not in _CATEGORY_ORDER:
            raise ValueError(f"ImportReport.add: unknown category {category!r}")
        self.entries.append(ReportEntry(category, subject, detail, agent))

    def select(self, category: Category | None = None, agent: str | None | Literal["*"] = "*") -> list[ReportEntry]:
        """The entries of one category (None: all) for one agent (None: the file; "*": any)."""
        return [e for e in self.entries
                if (category is None or e.category == category) and (agent == "*" or e.agent == agent)]

    @property
    def warnings(self) -> list[ReportEntry]:
        """Every warning, file and agents alike."""
        return self.select("warning")

    def format(self) -> str:
        """The report as text: the file's entries, then each agent's, by category."""
        n, w = len(self.agent_names), len(self.warnings)
        lines = [f"Import report for {self.source or 'an agent file'}: {n} agent{'s' * (n != 1)}, "
                 f"{w} warning{'s' * (w != 1)}"]
        agents: list[str | None] = [None]
        for e in self.entries:
            if e.agent is not None and e.agent not in agents:
                agents.append(e.agent)
        for agent in agents:
            entries = self.select(None, agent)
            if not entries:
                continue
            if agent is None:
                lines.append("file:")
            else:
                name = self.agent_names.get(agent)
                lines.append(f"agent {agent}" + (f" ({name})" if name else "") + ":")
            for cat in _CATEGORY_ORDER:
                for e in entries:
                    if e.category == cat:
                        lines.append(f"  {cat:<8} {e.subject}: {e.detail}")
        return "\n".join(lines)

    __str__ = format

    def __repr__(self) -> str:
        counts = {c: len(self.select(c)) for c in _CATEGORY_ORDER}
        return f"ImportReport({self.source!r}, {counts})"


# ---------------------------------------------------------------- the data

@dataclass(frozen=True)
class ToolCall:
    """An assistant's call of a function, as OpenAI shapes it (arguments are JSON text)."""

    id: str
    name: str
    arguments: str = "{}"

    def __post_init__(self) -> None:
        if not isinstance(self.arguments, str):
            object.__setattr__(self, "arguments", json.dumps(self.arguments, ensure_ascii=False))

    def to_openai(self) -> dict[str, Any]:
        """``{"id", "type": "function", "function": {"name", "arguments"}}``."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


_OPENAI_NAME = re.compile(r"^[^\s<|\\/>]+$")


@dataclass(frozen=True)
class ChatMessage:
    """One message of an agent's history, as an OpenAI-compatible server takes it.

    ``content`` is Letta's list of parts flattened to text: text parts joined by a blank
    line, an image as ``[image omitted]``; a model's native reasoning goes to
    ``reasoning`` (kept as data, not sent); what could not be kept is named in
    ``dropped``; ``parts`` keeps the text parts when there were several, so that writing the
    message back gives them as they were. User messages Letta wrapped in a ``user_message`` envelope are unwrapped;
    heartbeats, logins and system alerts keep the envelope text the model saw (see
    :attr:`kind`). ``name`` is the function's name on a tool result.
    """

    role: Role
    content: str
    timestamp: _dt.datetime
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    name: str | None = None
    reasoning: str = ""
    letta_id: str | None = field(default=None, compare=False)
    dropped: tuple[str, ...] = field(default=(), compare=False)
    synthetic: bool = field(default=False, compare=False)
    parts: tuple[str, ...] = field(default=(), compare=False)  #: the text parts when the file had several

    def __post_init__(self) -> None:
        _settle(self, tuples=("tool_calls", "dropped", "parts"), times=("timestamp",))

    @property
    def kind(self) -> MessageKind:
        """``tool_result``; ``heartbeat``, ``login``, ``system_alert`` or ``summary`` for
        Letta's envelopes; ``message`` otherwise."""
        if self.role == "tool":
            return "tool_result"
        if self.role in ("user", "system"):
            env = _envelope(self.content)
            if env is not None:
                if env["type"] in ("heartbeat", "login"):
                    return env["type"]
                if env["type"] == "system_alert":
                    return "summary" if _summary_body(env) is not None else "system_alert"
        return "message"

    @property
    def reply(self) -> str | None:
        """What a ``send_message`` call of this message said to the user, if any."""
        for call in self.tool_calls:
            if call.name == "send_message":
                try:
                    args = json.loads(call.arguments)
                except ValueError:
                    return None
                msg = args.get("message") if isinstance(args, dict) else None
                return msg if isinstance(msg, str) else None
        return None

    def to_openai(self) -> dict[str, Any]:
        """The message as an OpenAI chat message."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.role == "assistant" and self.tool_calls:
            out["tool_calls"] = [c.to_openai() for c in self.tool_calls]
            out["content"] = self.content or None
        elif self.role == "tool":
            out["tool_call_id"] = self.tool_call_id
        if self.name and self.role in ("user", "assistant", "tool") and _OPENAI_NAME.match(self.name):
            out["name"] = self.name
        return out


@dataclass(frozen=True)
class BlockSpec:
    """A core memory block. ``limit`` is in characters; ``shared_by`` lists the ids of the
    file's agents that use the block (set on reading; the writer derives it again)."""

    label: str
    value: str
    limit: int = DEFAULT_BLOCK_LIMIT
    description: str = ""
    read_only: bool = False
    id: str = ""
    shared_by: tuple[str, ...] = ()
    letta: Mapping[str, Any] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        _settle(self, mappings=("letta",), tuples=("shared_by",))


@dataclass(frozen=True)
class ToolMapping:
    """How a Letta tool maps to a vmem built-in (see :attr:`ToolSpec.mapping`)."""

    builtin: str
    renamed: tuple[tuple[str, str], ...] = ()  # (Letta argument, vmem argument)
    unsupported: tuple[str, ...] = ()          # Letta arguments vmem has no equivalent for
    note: str = ""                             # a difference in behaviour

    @property
    def exact(self) -> bool:
        """Same arguments, same behaviour."""
        return not (self.renamed or self.unsupported or self.note)

    def describe(self) -> str:
        """One line for the report."""
        if self.exact:
            return f"vmem {self.builtin} (same arguments)"
        parts = [f"{a} -> {b}" for a, b in self.renamed]
        parts += [f"{a} not supported" for a in self.unsupported]
        if self.note:
            parts.append(self.note)
        return f"vmem {self.builtin} (partial: {'; '.join(parts)})"


# Letta tool -> vmem built-in: (builtin, argument renames, behaviour difference). Letta
# renamed some arguments over time (memory_replace: old_str, later old_string): both listed.
_LETTA_TO_VMEM: dict[str, tuple[str, tuple[tuple[str, str], ...], str]] = {
    "send_message": ("send_message", (), ""),
    "core_memory_append": ("core_memory_append", (), ""),
    "core_memory_replace": ("core_memory_replace", (),
                            "vmem refuses an old_content that occurs more than once, Letta replaced each"),
    "memory_replace": ("core_memory_replace", (("old_string", "old_content"), ("new_string", "new_content"),
                                               ("old_str", "old_content"), ("new_str", "new_content")), ""),
    "memory_insert": ("memory_insert", (("new_string", "content"), ("new_str", "content")), ""),
    "memory_rethink": ("memory_rethink", (), ""),
    "rethink_memory": ("memory_rethink", (("target_block_label", "label"),),
                       "Letta created a missing block, vmem refuses"),
    "archival_memory_insert": ("archival_memory_insert", (), ""),
    "archival_memory_search": ("archival_memory_search",
                               (("tag_match_mode", "tags_match"), ("start_datetime", "start_date"),
                                ("end_datetime", "end_date")), ""),
    "conversation_search": ("conversation_search", (), ""),
    "conversation_search_date": ("conversation_search", (), ""),
}
# Letta's current arguments of those tools, for a file that carries no schema.
_LETTA_DEFAULT_ARGS: dict[str, tuple[str, ...]] = {
    "send_message": ("message",),
    "core_memory_append": ("label", "content"),
    "core_memory_replace": ("label", "old_content", "new_content"),
    "memory_replace": ("label", "old_string", "new_string"),
    "memory_insert": ("label", "new_string", "insert_line"),
    "memory_rethink": ("label", "new_memory"),
    "rethink_memory": ("new_memory", "target_block_label"),
    "archival_memory_insert": ("content", "tags"),
    "archival_memory_search": ("query", "tags", "tag_match_mode", "top_k", "start_datetime", "end_datetime"),
    "conversation_search": ("query", "roles", "limit", "start_date", "end_date"),
    "conversation_search_date": ("start_date", "end_date", "page"),
}
# vmem built-in -> (Letta name, Letta tool_type), for export.
_VMEM_TO_LETTA: dict[str, tuple[str, str]] = {
    "send_message": ("send_message", "letta_core"),
    "core_memory_append": ("core_memory_append", "letta_memory_core"),
    "core_memory_replace": ("core_memory_replace", "letta_memory_core"),
    "memory_insert": ("memory_insert", "letta_sleeptime_core"),
    "memory_rethink": ("memory_rethink", "letta_sleeptime_core"),
    "archival_memory_insert": ("archival_memory_insert", "letta_core"),
    "archival_memory_search": ("archival_memory_search", "letta_core"),
    "conversation_search": ("conversation_search", "letta_core"),
}
_CORE_TOOL_TYPES = frozenset({"letta_core", "letta_memory_core", "letta_sleeptime_core"})
# Why a Letta tool that is not mapped cannot run in vmem, by tool_type.
_SERVER_TOOLS = {
    "letta_builtin": "a Letta server built-in (web search, fetch, code sandbox)",
    "letta_files_core": "needs Letta's file system (sources and files)",
    "letta_multi_agent_core": "needs Letta's multi-agent messaging",
    "letta_voice_sleeptime_core": "needs Letta's voice sleep-time agent",
    "external_mcp": "needs its MCP server",
    "external_composio": "needs Composio",
    "external_langchain": "needs LangChain",
}


@dataclass(frozen=True)
class ToolSpec:
    """A tool an agent may call: its declared schema (``json_schema``: name, description,
    parameters) and, for a custom tool, its source code, which is data and never run here.
    ``letta`` keeps Letta's other tool fields (pip requirements, return limit, ...)."""

    name: str
    tool_type: str = "custom"
    description: str = ""
    json_schema: Mapping[str, Any] | None = None
    source_code: str | None = None
    source_type: str | None = None
    id: str = ""
    letta: Mapping[str, Any] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        _settle(self, mappings=("json_schema", "letta"))

    @property
    def parameters(self) -> tuple[str, ...] | None:
        """The declared parameter names (request_heartbeat aside), None without a schema."""
        schema = self.json_schema
        params = schema.get("parameters") if isinstance(schema, Mapping) else None
        props = params.get("properties") if isinstance(params, Mapping) else None
        if not isinstance(props, Mapping):
            return None
        return tuple(p for p in props if p != "request_heartbeat")

    @property
    def mapping(self) -> ToolMapping | None:
        """The vmem built-in this tool is, None for a tool vmem does not have.

        A Letta core tool maps by name; so does a custom declaration with no source code.
        A custom tool with its own source is the author's code, never a built-in; an MCP
        or other external tool is someone else's.
        """
        entry = _LETTA_TO_VMEM.get(self.name)
        if entry is None:
            return None
        if self.tool_type not in _CORE_TOOL_TYPES and (self.tool_type != "custom" or self.source_code):
            return None
        builtin, renames, note = entry
        declared = self.parameters
        if declared is None:
            declared = _LETTA_DEFAULT_ARGS[self.name]
        vmem_params = VMEM_BUILTINS[builtin]
        renamed = tuple((a, b) for a, b in renames if a in declared)
        names = dict(renamed)
        unsupported = tuple(a for a in declared if names.get(a, a) not in vmem_params)
        return ToolMapping(builtin, renamed, unsupported, note)

    @property
    def builtin(self) -> str | None:
        """The name of the vmem built-in this tool maps to, or None."""
        m = self.mapping
        return m.builtin if m else None


def builtin_tool(name: str, json_schema: Mapping[str, Any] | None = None) -> ToolSpec:
    """The ToolSpec that exports vmem built-in ``name`` as the matching Letta core tool."""
    if name not in _VMEM_TO_LETTA:
        raise ValueError(f"builtin_tool: {name!r} is not a vmem built-in ({', '.join(VMEM_BUILTINS)})")
    letta_name, tool_type = _VMEM_TO_LETTA[name]
    desc = str(json_schema.get("description", "")) if isinstance(json_schema, Mapping) else ""
    return ToolSpec(letta_name, tool_type, desc, _freeze(json_schema) if json_schema is not None else None)


@dataclass(frozen=True)
class ToolRule:
    """A Letta tool rule (``type``: run_first, exit_loop, continue_loop, ...), kept as data;
    ``params`` holds its other fields (children, max_count_limit, ...)."""

    type: str
    tool_name: str
    params: Mapping[str, Any] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        _settle(self, mappings=("params",))


@dataclass(frozen=True)
class ArchivalPassage:
    """An archival memory passage (vmem's; Letta's format has none)."""

    text: str
    tags: tuple[str, ...] = ()
    timestamp: _dt.datetime = field(default_factory=lambda: _EPOCH)

    def __post_init__(self) -> None:
        _settle(self, tuples=("tags",), times=("timestamp",))


@dataclass(frozen=True)
class GroupSpec:
    """A Letta multi-agent group (e.g. sleeptime: a manager agent and its helpers)."""

    id: str
    agent_ids: tuple[str, ...]
    manager_type: str = "round_robin"
    manager_agent_id: str | None = None
    description: str = ""
    shared_block_ids: tuple[str, ...] = ()
    config: Mapping[str, Any] = field(default_factory=_empty)

    def __post_init__(self) -> None:
        _settle(self, mappings=("config",), tuples=("agent_ids", "shared_block_ids"))


@dataclass(frozen=True)
class AgentSpec:
    """One agent of a file, in vmem's terms.

    ``in_context`` is the message queue (context order), ``out_of_context`` the older
    history that belongs in recall storage only; ``summary`` is the recursive summary's
    text (Letta's summary message, unwrapped). ``context_window`` is in tokens.
    ``agent_type`` is Letta's (``memgpt_agent``: replies through send_message;
    ``letta_v1_agent``: replies in the assistant text); set it when exporting a vmem agent.
    ``letta`` keeps Letta settings vmem does not use (llm_config, embedding_config, tags,
    timezone, ...) so an export can give them back. ``memory``: how a vmem agent's memory was
    set up (``config``: its MemoryConfig as a dict; ``instructions``: its memory instructions),
    carried in vmem's extension so that export then import keeps it; empty for Letta's own agents.
    ``originals``: how the file wrote the messages vmem derives rather than stores: the compiled
    system message (``system``: its ``created_at``) and the summary message (``summary``: the
    summary it held, its ``role``, ``content`` and ``created_at``), so that writing the agent
    back gives them unchanged while the summary is the same.
    """

    name: str
    system: str
    blocks: tuple[BlockSpec, ...] = ()
    tools: tuple[ToolSpec, ...] = ()
    tool_rules: tuple[ToolRule, ...] = ()
    in_context: tuple[ChatMessage, ...] = ()
    out_of_context: tuple[ChatMessage, ...] = ()
    summary: str = ""
    passages: tuple[ArchivalPassage, ...] = ()
    context_window: int | None = None
    model: str | None = None
    agent_type: str | None = None
    description: str = ""
    id: str = ""
    letta: Mapping[str, Any] = field(default_factory=_empty)
    memory: Mapping[str, Any] = field(default_factory=_empty)
    originals: Mapping[str, Any] = field(default_factory=_empty, compare=False)

    def __post_init__(self) -> None:
        _settle(self, mappings=("letta", "memory", "originals"),
                tuples=("blocks", "tools", "tool_rules", "in_context", "out_of_context", "passages"))

    def block(self, label: str) -> BlockSpec:
        """The block called ``label`` (KeyError if none)."""
        for b in self.blocks:
            if b.label == label:
                return b
        raise KeyError(label)


@dataclass(frozen=True)
class AgentFile:
    """A parsed agent file: its agents, groups and the report of how it was read."""

    agents: tuple[AgentSpec, ...]
    groups: tuple[GroupSpec, ...] = ()
    created_at: _dt.datetime | None = None
    metadata: Mapping[str, Any] = field(default_factory=_empty)
    report: ImportReport = field(default_factory=ImportReport, compare=False, repr=False)

    def __post_init__(self) -> None:
        _settle(self, mappings=("metadata",), tuples=("agents", "groups"), times=("created_at",))

    @property
    def blocks(self) -> tuple[BlockSpec, ...]:
        """Every block of the file's agents, once each."""
        return tuple(_unique(b for a in self.agents for b in a.blocks))

    @property
    def tools(self) -> tuple[ToolSpec, ...]:
        """Every tool of the file's agents, once each."""
        return tuple(_unique(t for a in self.agents for t in a.tools))

    def agent(self, key: str) -> AgentSpec:
        """The agent with file-local id or name ``key`` (KeyError if none)."""
        for a in self.agents:
            if key in (a.id, a.name):
                return a
        raise KeyError(key)


def _unique(items: Iterable[Any]) -> list[Any]:
    """Items in order without repeats: the same id, or the same object when it has none."""
    seen: set[Any] = set()
    out = []
    for item in items:
        key = item.id or id(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


# ---------------------------------------------------------------- Letta's envelopes

def _envelope(text: str) -> dict[str, Any] | None:
    """Letta's JSON envelope ``{"type": ..., ...}`` in ``text``, or None."""
    s = text.strip()
    if not (s.startswith("{") and s.endswith("}") and '"type"' in s):
        return None
    try:
        obj = json.loads(s)
    except ValueError:
        return None
    if isinstance(obj, dict) and isinstance(obj.get("type"), str):
        return obj
    return None


# "Note: prior messages (69 of 80 total messages) have been hidden from view ...",
# "Note: 12 messages from the beginning of the conversation have been hidden from view ...", ...
_HIDDEN = re.compile(r"^Note: (?:\d+ )?(?:prior )?messages\b.*?hidden from view", re.DOTALL)
_SUMMARY_HEAD = re.compile(r"The following is a summary of the previous(?: \d+)? messages:\n ?")


def _summary_body(env: Mapping[str, Any]) -> str | None:
    """The summary text of a system_alert envelope that is Letta's summary, else None."""
    msg = env.get("message")
    if env.get("type") != "system_alert" or not isinstance(msg, str) or not _HIDDEN.match(msg):
        return None
    head = _SUMMARY_HEAD.search(msg)
    return msg[head.end():] if head else ""


def _letta_time(t: _dt.datetime) -> str:
    """A timestamp as Letta writes it inside envelopes."""
    return t.strftime("%Y-%m-%d %I:%M:%S %p %Z%z")


def _summary_envelope(summary: str, t: _dt.datetime) -> str:
    msg = ("Note: prior messages have been hidden from view due to conversation memory constraints.\n"
           f"The following is a summary of the previous messages:\n {summary}")
    return json.dumps({"type": "system_alert", "message": msg, "time": _letta_time(t)}, indent=2, ensure_ascii=False)


# ---------------------------------------------------------------- known fields

_TOP_FIELDS = frozenset({"agents", "groups", "blocks", "files", "sources", "tools", "mcp_servers", "skills",
                         "metadata", "created_at", EXTENSION_KEY})
_AGENT_FIELDS = frozenset({
    # CreateAgent
    "name", "memory_blocks", "tools", "tool_ids", "source_ids", "folder_ids", "block_ids", "tool_rules", "tags",
    "system", "agent_type", "initial_message_sequence", "include_base_tools", "include_multi_agent_tools",
    "include_base_tool_rules", "include_default_source", "description", "metadata", "llm_config",
    "embedding_config", "model", "embedding", "model_settings", "compaction_settings", "context_window_limit",
    "embedding_chunk_size", "max_tokens", "max_reasoning_tokens", "enable_reasoner", "reasoning", "from_template",
    "template", "project", "tool_exec_environment_variables", "secrets", "memory_variables", "project_id",
    "template_id", "base_template_id", "identity_ids", "message_buffer_autoclear", "enable_sleeptime",
    "response_format", "timezone", "max_files_open", "per_file_view_window_char_limit", "hidden",
    "parallel_tool_calls",
    # AgentSchema
    "id", "in_context_message_ids", "messages", "files_agents", "group_ids",
})
_MESSAGE_FIELDS = frozenset({
    "type", "otid", "group_id", "role", "content", "name", "sender_id", "batch_item_id", "id", "model",
    "agent_id", "tool_calls", "tool_call_id", "tool_returns", "created_at", "approve", "approval_request_id",
    "denial_reason", "approvals",
    # older exports
    "updated_at", "step_id", "run_id", "text",
})
_BLOCK_FIELDS = frozenset({
    "id", "value", "limit", "project_id", "template_name", "is_template", "template_id", "base_template_id",
    "deployment_id", "entity_id", "preserve_on_migration", "label", "read_only", "description", "metadata",
    "hidden", "tags",
    # older exports
    "created_at", "updated_at", "metadata_", "name", "created_by_id", "last_updated_by_id",
})
_TOOL_SCHEMA_FIELDS = frozenset({
    "id", "tool_type", "description", "source_type", "name", "tags", "source_code", "json_schema",
    "args_json_schema", "return_char_limit", "pip_requirements", "npm_requirements", "default_requires_approval",
    "enable_parallel_execution", "created_by_id", "last_updated_by_id", "metadata_", "project_id",
})
_TOOL_FIELDS = _TOOL_SCHEMA_FIELDS | {"created_at", "updated_at", "module"}
_TOOL_RETURN_FIELDS = frozenset({"tool_call_id", "status", "stdout", "stderr", "func_response", "type"})
_GROUP_FIELDS = frozenset({"id", "agent_ids", "description", "manager_config", "project_id", "shared_block_ids",
                           "hidden"})
_LEGACY_FIELDS = frozenset({
    "agent_type", "core_memory", "created_at", "description", "embedding_config", "llm_config",
    "message_buffer_autoclear", "in_context_message_indices", "messages", "metadata_", "metadata",
    "multi_agent_group", "name", "system", "tags", "tool_exec_environment_variables", "tool_rules", "tools",
    "updated_at", "version",
})

# Agent fields the AgentSpec holds itself, or that name things vmem does not import.
_AGENT_NOT_PASSED = frozenset({
    "id", "name", "system", "agent_type", "description", "block_ids", "tool_ids", "tools", "tool_rules",
    "messages", "in_context_message_ids", "memory_blocks", "initial_message_sequence", "context_window_limit",
    "files_agents", "group_ids", "source_ids", "folder_ids", "identity_ids", "secrets",
    "tool_exec_environment_variables", "include_base_tools", "include_multi_agent_tools",
    "include_base_tool_rules", "include_default_source", "project_id", "template_id", "base_template_id",
    "from_template", "project", "template", "created_at", "updated_at",
})
_BLOCK_PASSED = frozenset({"metadata", "hidden", "tags", "is_template", "template_name", "preserve_on_migration"})
_TOOL_PASSED = frozenset({"tags", "args_json_schema", "return_char_limit", "pip_requirements", "npm_requirements",
                          "default_requires_approval", "enable_parallel_execution", "metadata_"})

# Fields the format defines that vmem has no use for (server ids, housekeeping), by entity.
_IGNORED: dict[str, frozenset[str]] = {
    "agents": frozenset({"project_id", "template_id", "base_template_id", "from_template", "project", "template",
                         "created_at", "updated_at"}),
    "messages": frozenset({"otid", "group_id", "sender_id", "batch_item_id", "model", "step_id", "run_id",
                           "updated_at"}),
    "blocks": frozenset({"project_id", "template_id", "base_template_id", "deployment_id", "entity_id",
                         "created_at", "updated_at", "created_by_id", "last_updated_by_id", "name"}),
    "tools": frozenset({"created_by_id", "last_updated_by_id", "project_id", "created_at", "updated_at", "module"}),
    "groups": frozenset({"project_id", "hidden"}),
    "tool returns": frozenset({"stdout", "stderr"}),
}

_ROLES = frozenset({"system", "user", "assistant", "tool", "function", "approval", "summary"})
_ID_RE = {p: re.compile(rf"^{p}-(\d+)$") for p in ("agent", "block", "tool", "message", "group")}


# ---------------------------------------------------------------- reading

def read_agent_file(path_or_bytes: str | os.PathLike[str] | bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> AgentFile:
    """Parse and check a Letta agent file; raise :class:`AgentFileError` if it cannot be imported.

    ``path_or_bytes`` is a path or the file's bytes. A file over ``max_bytes`` is refused
    before it is read. Accepted with a note: JSON encoded twice (a JSON string holding the
    document), the single-agent layout of Letta 0.6/0.7. Unknown fields are warnings: the
    format evolves. Everything done is listed in the returned file's ``report``.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        source = "<bytes>"
        data = bytes(path_or_bytes)
        if len(data) > max_bytes:
            raise AgentFileTooLarge(f"{source}: {len(data)} bytes is over the limit of {max_bytes} "
                                    "(max_bytes); pass a larger max_bytes to read it")
    else:
        source = os.fspath(path_or_bytes)
        data = _read_bounded(source, max_bytes)
    report = ImportReport(Path(source).name if source != "<bytes>" else source)
    reader = _Reader(report.source, report)
    doc = reader.decode(data)
    return reader.parse(doc)


def _read_bounded(path: str, max_bytes: int) -> bytes:
    """The file's bytes, refusing one over ``max_bytes`` by its size, then by what it yields."""
    name = Path(path).name
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise NotAnAgentFile(f"{name}: is a directory, not an agent file")
        if stat.S_ISREG(st.st_mode) and st.st_size > max_bytes:
            raise AgentFileTooLarge(f"{name}: {st.st_size} bytes is over the limit of {max_bytes} "
                                    "(max_bytes); pass a larger max_bytes to read it")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)  # a pipe or device has no size to check first
    except OSError as exc:
        raise AgentFileError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise AgentFileTooLarge(f"{name}: more than {max_bytes} bytes (max_bytes); pass a larger max_bytes to read it")
    return data


@dataclass
class _Item:
    """A message on its way to the output: where it was, and what it answers."""

    msg: ChatMessage
    ctx: bool
    result_for: str | None = None   # the tool_call_id a tool result answers
    weak: bool = False              # a result found in an approval message: used when no tool message answers
    approval: bool = False          # calls from an approval request (merged into the call before, as Letta does)


class _Reader:
    """One file's parse: the report it fills and the checks it fails with."""

    def __init__(self, source: str, report: ImportReport) -> None:
        self.source = source
        self.report = report
        self.unknown: dict[str, dict[str, int]] = {}
        self.ignored: dict[str, dict[str, int]] = {}
        self.naive_times = 0
        self.bad_times = 0
        self.legacy = False

    # -- failing and checking

    def fail(self, where: str, reason: str, cls: type[AgentFileError] = AgentFileError) -> NoReturn:
        raise cls(f"{self.source}: {where}: {reason}" if where else f"{self.source}: {reason}")

    def get(self, obj: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            default: Any = None, *, required: bool = False) -> Any:
        """``obj[key]`` checked to be of ``kind`` (None and absent give ``default``)."""
        value = obj.get(key)
        if value is None:
            if required:
                self.fail(where, f"missing {key!r}", BrokenReference if key == "id" else AgentFileError)
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(_JSON_NAMES.get(k, k.__name__) for k in kinds)
            self.fail(where, f"{key!r} must be {names}, got {_JSON_NAMES.get(type(value), type(value).__name__)}")
        return value

    def get_id(self, obj: Mapping[str, Any], where: str) -> str:
        value = self.get(obj, "id", str, where, required=True)
        if not value.strip():
            self.fail(where, "empty 'id'", BrokenReference)
        return value

    def str_list(self, obj: Mapping[str, Any], key: str, where: str) -> list[str]:
        items = self.get(obj, key, list, where, [])
        for i, v in enumerate(items):
            if not isinstance(v, str):
                self.fail(where, f"{key}[{i}] must be a string id, got {_JSON_NAMES.get(type(v), type(v).__name__)}")
        return items

    def fields(self, obj: Mapping[str, Any], known: frozenset[str], entity: str) -> None:
        """Count the fields of ``obj`` the format does not define, and the known ones vmem ignores."""
        for key in obj:
            if key not in known:
                seen = self.unknown.setdefault(entity, {})
                seen[key] = seen.get(key, 0) + 1
        for key in _IGNORED.get(entity, ()):
            if obj.get(key) not in (None, "", [], {}, False):
                seen = self.ignored.setdefault(entity, {})
                seen[key] = seen.get(key, 0) + 1

    def time(self, value: Any) -> _dt.datetime | None:
        t = _parse_time(value)
        if t is None:
            if value is not None:
                self.bad_times += 1
            return None
        if t.tzinfo is None:
            self.naive_times += 1
            t = t.replace(tzinfo=UTC)
        return t.astimezone(UTC)

    # -- the document

    def decode(self, data: bytes) -> dict[str, Any]:
        """The top-level JSON object, from UTF-8 bytes, JSON encoded once or twice."""
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.fail("", f"not UTF-8 text (bad byte at offset {exc.start}): not an agent file", NotAnAgentFile)
        if not text.strip():
            self.fail("", "empty file: not an agent file", NotAnAgentFile)
        doc = self._json(text, "not JSON")
        if isinstance(doc, str):
            doc = self._json(doc, "a JSON string that does not hold JSON")
            if isinstance(doc, str):
                self.fail("", "JSON encoded more than twice: not an agent file", NotAnAgentFile)
            self.report.add("note", "double-encoded JSON",
                            "the file is a JSON string holding the document; decoded it")
        if not isinstance(doc, dict):
            self.fail("", f"expected a JSON object with 'agents', got {_JSON_NAMES.get(type(doc), 'a value')}",
                      NotAnAgentFile)
        return doc

    def _json(self, text: str, what: str) -> Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            self.fail("", f"{what} ({exc.msg} at line {exc.lineno} column {exc.colno})", NotAnAgentFile)
        except RecursionError:
            self.fail("", f"{what} (nested too deeply)", NotAnAgentFile)

    def parse(self, doc: dict[str, Any]) -> AgentFile:
        """Check the document and build the AgentFile."""
        if "agents" not in doc and ("core_memory" in doc or "in_context_message_indices" in doc):
            doc = self._from_legacy(doc)
        elif "agents" not in doc:
            keys = ", ".join(sorted(map(str, doc))[:8]) or "none"
            self.fail("", f"no 'agents' list: not a Letta agent file (top-level keys: {keys})", NotAnAgentFile)
        else:
            self.fields(doc, _TOP_FIELDS, "the top level")
        raw_agents = self.get(doc, "agents", list, "", required=True)
        for i, a in enumerate(raw_agents):
            if not isinstance(a, dict):
                self.fail(f"agents[{i}]", f"must be an object, got {_JSON_NAMES.get(type(a), 'a value')}",
                          NotAnAgentFile)
        for key in ("groups", "blocks", "tools", "files", "sources", "mcp_servers", "skills"):
            self.get(doc, key, list, "")

        agent_ids = [self.get_id(a, f"agents[{i}]") for i, a in enumerate(raw_agents)]
        _no_duplicates(self, agent_ids, "agent")
        blocks = self._index(doc, "blocks", _BLOCK_FIELDS, "block")
        tools = self._index(doc, "tools", _TOOL_FIELDS, "tool")
        ext = self._extension(doc, set(agent_ids))

        # which agents list each block, checked before anything is built
        block_lists: dict[str, list[str]] = {}
        tool_lists: dict[str, list[str]] = {}
        for i, (aid, raw) in enumerate(zip(agent_ids, raw_agents)):
            where = f"agents[{i}] ({aid})"
            block_lists[aid] = self._refs(self.str_list(raw, "block_ids", where), blocks, "block_ids", where, aid)
            tool_lists[aid] = self._refs(self.str_list(raw, "tool_ids", where), tools, "tool_ids", where, aid)
        shared: dict[str, list[str]] = {}
        for aid in agent_ids:
            for bid in block_lists[aid]:
                shared.setdefault(bid, []).append(aid)
        block_specs = {bid: self._block(raw, bid, tuple(shared.get(bid, ()))) for bid, raw in blocks.items()}
        tool_specs = {tid: self._tool(raw, tid) for tid, raw in tools.items()}

        agents = []
        for i, (aid, raw) in enumerate(zip(agent_ids, raw_agents)):
            agents.append(self._agent(raw, aid, f"agents[{i}] ({aid})", [block_specs[b] for b in block_lists[aid]],
                                      [tool_specs[t] for t in tool_lists[aid]], tool_specs, ext.get(aid, {})))
        groups = self._groups(doc, set(agent_ids), set(blocks))
        self._report_file(doc, blocks, tools, shared, tool_lists)

        metadata = self.get(doc, "metadata", dict, "", {})
        created = self.time(doc.get("created_at"))
        self._report_unknown()
        return AgentFile(tuple(agents), tuple(groups), created, _freeze(metadata), self.report)

    def _index(self, doc: Mapping[str, Any], key: str, known: frozenset[str], entity: str) -> dict[str, dict]:
        """The file's ``key`` list by id, every entry an object with a unique id."""
        out: dict[str, dict] = {}
        for i, raw in enumerate(doc.get(key) or ()):
            where = f"{key}[{i}]"
            if not isinstance(raw, dict):
                self.fail(where, f"must be an object, got {_JSON_NAMES.get(type(raw), 'a value')}")
            rid = self.get_id(raw, where)
            if rid in out:
                self.fail(where, f"id {rid!r} is used twice", BrokenReference)
            self.fields(raw, known, entity + "s")
            out[rid] = raw
        return out

    def _refs(self, ids: list[str], known: Mapping[str, Any], key: str, where: str, aid: str) -> list[str]:
        """``ids`` checked to name entries of the file, repeats dropped."""
        out: list[str] = []
        for rid in ids:
            if rid not in known:
                what = key[:-4]
                self.fail(where, f"{key} names {what} {rid!r}, which the file does not define", BrokenReference)
            if rid in out:
                self.report.add("warning", f"{key} {rid}", "listed twice; used once", aid)
                continue
            out.append(rid)
        return out

    # -- blocks, tools, groups

    def _block(self, raw: Mapping[str, Any], bid: str, shared_by: tuple[str, ...]) -> BlockSpec:
        where = f"block {bid}"
        label = self.get(raw, "label", str, where, required=True)
        if not label.strip():
            self.fail(where, "empty 'label'")
        value = self.get(raw, "value", str, where, "").replace("\x00", "")
        limit = self.get(raw, "limit", int, where)
        if limit is None:
            limit = DEFAULT_BLOCK_LIMIT
            self.report.add("note", f"block {label} ({bid})", f"no limit in the file; Letta's default {limit} used")
        elif limit <= 0:
            self.fail(where, f"'limit' must be positive, got {limit}")
        passed = {k: raw[k] for k in _BLOCK_PASSED if raw.get(k) not in (None, {}, [], False)}
        return BlockSpec(label, value, limit, self.get(raw, "description", str, where, ""),
                         bool(self.get(raw, "read_only", bool, where, False)), bid, shared_by, _freeze(passed))

    def _tool(self, raw: Mapping[str, Any], tid: str) -> ToolSpec:
        where = f"tool {tid}"
        schema = self.get(raw, "json_schema", dict, where)
        name = self.get(raw, "name", str, where) or (schema or {}).get("name")
        if not isinstance(name, str) or not name.strip():
            self.fail(where, "no 'name' (and none in its json_schema)")
        passed = {k: raw[k] for k in _TOOL_PASSED if raw.get(k) not in (None, {}, [])}
        return ToolSpec(name, self.get(raw, "tool_type", str, where, "custom"),
                        self.get(raw, "description", str, where, ""),
                        _freeze(schema) if schema is not None else None,
                        self.get(raw, "source_code", str, where), self.get(raw, "source_type", str, where),
                        tid, _freeze(passed))

    def _groups(self, doc: Mapping[str, Any], agent_ids: set[str], block_ids: set[str]) -> list[GroupSpec]:
        out = []
        seen: set[str] = set()
        for i, raw in enumerate(doc.get("groups") or ()):
            where = f"groups[{i}]"
            if not isinstance(raw, dict):
                self.fail(where, "must be an object")
            gid = self.get_id(raw, where)
            if gid in seen:
                self.fail(where, f"id {gid!r} is used twice", BrokenReference)
            seen.add(gid)
            self.fields(raw, _GROUP_FIELDS, "groups")
            members = self.str_list(raw, "agent_ids", where)
            config = dict(self.get(raw, "manager_config", dict, where, {}))
            mtype = str(config.pop("manager_type", "round_robin"))
            manager = config.pop("manager_agent_id", None)
            manager = manager if isinstance(manager, str) else None
            shared = self.str_list(raw, "shared_block_ids", where)
            dangling = [a for a in members + ([manager] if manager else []) if a not in agent_ids]
            dangling += [b for b in shared if b not in block_ids]
            roles = mtype + (f", manager {manager}" if manager else "") + f", agents {', '.join(members) or 'none'}"
            if dangling:
                self.report.add("warning", f"group {gid}", f"({roles}) names {', '.join(dangling)}, which the file "
                                "does not define; group dropped")
                continue
            self.report.add("kept", f"group {gid}", f"({roles}) kept as data for export; vmem runs each agent "
                            "on its own")
            out.append(GroupSpec(gid, tuple(members), mtype, manager, self.get(raw, "description", str, where, ""),
                                 tuple(shared), _freeze(config)))
        return out

    def _extension(self, doc: Mapping[str, Any], agent_ids: set[str]) -> dict[str, dict[str, Any]]:
        """vmem's own data (passages) from the extension field, by agent id."""
        ext = doc.get(EXTENSION_KEY)
        if ext is None:
            return {}
        where = EXTENSION_KEY
        if not isinstance(ext, dict):
            self.fail(where, "must be an object")
        version = ext.get("version")
        if version != EXTENSION_VERSION:
            self.report.add("warning", where, f"version {version!r} is not {EXTENSION_VERSION}: vmem's extension "
                            "ignored (archival passages not imported)")
            return {}
        out: dict[str, dict[str, Any]] = {}
        for aid, entry in self.get(ext, "agents", dict, where, {}).items():
            w = f"{where}.agents.{aid}"
            if aid not in agent_ids:
                self.fail(w, f"names agent {aid!r}, which the file does not define", BrokenReference)
            if not isinstance(entry, dict):
                self.fail(w, "must be an object")
            passages = []
            for j, p in enumerate(self.get(entry, "passages", list, w, [])):
                pw = f"{w}.passages[{j}]"
                if not isinstance(p, dict):
                    self.fail(pw, "must be an object")
                t = self.time(p.get("created_at"))
                if t is None:
                    self.fail(pw, "'created_at' must be an ISO 8601 time")
                tags = self.str_list(p, "tags", pw)
                passages.append(ArchivalPassage(self.get(p, "text", str, pw, required=True), tuple(tags), t))
            made_up = self.str_list(entry, "generated", w)
            memory = self.get(entry, "memory", dict, w, {})
            for key, kind in (("config", dict), ("instructions", str)):
                self.get(memory, key, kind, f"{w}.memory")
            out[aid] = {"passages": tuple(passages), "name": self.get(entry, "name", str, w), "generated": made_up,
                        "memory": memory}
        return out

    # -- agents

    def _agent(self, raw: Mapping[str, Any], aid: str, where: str, blocks: list[BlockSpec], tools: list[ToolSpec],
               all_tools: Mapping[str, ToolSpec], ext: Mapping[str, Any]) -> AgentSpec:
        if not self.legacy:
            self.fields(raw, _AGENT_FIELDS, "agents")
        name = ext.get("name") or self.get(raw, "name", str, where) or aid
        self.report.agent_names[aid] = name
        system = self.get(raw, "system", str, where, "")
        blocks = blocks + self._inline_blocks(raw, aid, where, blocks)
        tools = tools + self._named_tools(raw, aid, where, tools, all_tools)
        labels: dict[str, str] = {}
        for b in blocks:
            if b.label in labels:
                self.fail(where, f"two blocks are labelled {b.label!r} ({labels[b.label]}, {b.id}); "
                          "a vmem agent's labels are unique", BrokenReference)
            labels[b.label] = b.id
        rules = self._tool_rules(raw, aid, where, {t.name for t in tools})
        llm = self.get(raw, "llm_config", dict, where, {})
        window = self.get(raw, "context_window_limit", int, where)
        if window is None:
            window = self.get(llm, "context_window", int, where + ".llm_config")
        model = self.get(llm, "model", str, where + ".llm_config")
        made_up = ext.get("generated", ())  # what vmem's writer filled in for Letta's sake
        window = None if "context_window" in made_up else window
        model = None if "model" in made_up else model
        summary, in_ctx, out_ctx, originals = self._messages(raw, aid, where, system)
        passed = {k: v for k, v in raw.items() if k not in _AGENT_NOT_PASSED and v is not None}
        rest = {k: v for k, v in llm.items() if k not in ("model", "context_window")}
        passed.pop("llm_config", None)
        if rest and "llm_config" not in made_up:
            passed["llm_config"] = rest  # model and window live in the AgentSpec's own fields
        spec = AgentSpec(name, system, tuple(blocks), tuple(tools), tuple(rules), tuple(in_ctx), tuple(out_ctx),
                         summary, ext.get("passages", ()), window, model, self.get(raw, "agent_type", str, where),
                         self.get(raw, "description", str, where, ""), aid, _freeze(passed),
                         ext.get("memory") or {}, originals)
        self._report_agent(spec, raw)
        return spec

    def _inline_blocks(self, raw: Mapping[str, Any], aid: str, where: str, listed: list[BlockSpec]) -> list[BlockSpec]:
        """Blocks written inline in ``memory_blocks`` (Letta's create request; exports leave it empty)."""
        out = []
        for j, b in enumerate(self.get(raw, "memory_blocks", list, where, [])):
            if not isinstance(b, dict):
                self.fail(f"{where}.memory_blocks[{j}]", "must be an object")
            self.fields(b, _BLOCK_FIELDS, "blocks")
            spec = self._block(b, "", (aid,))
            out.append(spec)
            self.report.add("note", f"block {spec.label}", "written inline in memory_blocks; imported like the others",
                            aid)
        return out

    def _named_tools(self, raw: Mapping[str, Any], aid: str, where: str, listed: list[ToolSpec],
                     all_tools: Mapping[str, ToolSpec]) -> list[ToolSpec]:
        """Tools named in ``tools`` (Letta's create request) that ``tool_ids`` did not list."""
        have = {t.name for t in listed}
        by_name = {t.name: t for t in all_tools.values()}
        out = []
        for n in self.str_list(raw, "tools", where):
            if n in have:
                continue
            if n in by_name:
                out.append(by_name[n])
                have.add(n)
            elif n in _LETTA_TO_VMEM:
                out.append(ToolSpec(n, "letta_core"))
                have.add(n)
            else:
                self.report.add("skipped", f"tool {n}", "named in the agent's tools but not defined in the file", aid)
        return out

    def _tool_rules(self, raw: Mapping[str, Any], aid: str, where: str, tool_names: set[str]) -> list[ToolRule]:
        out = []
        for j, r in enumerate(self.get(raw, "tool_rules", list, where, [])):
            w = f"{where}.tool_rules[{j}]"
            if not isinstance(r, dict):
                self.fail(w, "must be an object")
            rtype = self.get(r, "type", str, w, required=True)
            tname = self.get(r, "tool_name", str, w, required=True)
            if tname not in tool_names:
                self.report.add("warning", f"tool rule {rtype} {tname}", "names a tool the agent does not have", aid)
            out.append(ToolRule(rtype, tname, _freeze({k: v for k, v in r.items() if k not in ("type", "tool_name")})))
        return out

    # -- messages

    def _messages(self, raw: Mapping[str, Any], aid: str, where: str,
                  system: str) -> tuple[str, list[ChatMessage], list[ChatMessage], dict[str, Any]]:
        """The summary, the in-context queue and the out-of-context history of one agent; and
        how the file wrote the messages vmem derives (see :attr:`AgentSpec.originals`)."""
        msgs = self.get(raw, "messages", list, where, [])
        stats = self.report.stats.setdefault(aid, {})
        by_id: dict[str, int] = {}
        for j, m in enumerate(msgs):
            if not isinstance(m, dict):
                self.fail(f"{where}.messages[{j}]", "must be an object")
            mid = self.get_id(m, f"{where}.messages[{j}]")
            if mid in by_id:
                self.fail(f"{where}.messages[{j}]", f"id {mid!r} is used twice", BrokenReference)
            by_id[mid] = j
            self.fields(m, _MESSAGE_FIELDS, "messages")
        order: list[int] = []
        in_set: set[int] = set()
        for mid in self.str_list(raw, "in_context_message_ids", where):
            if mid not in by_id:
                self.fail(where, f"in_context_message_ids names message {mid!r}, which the agent's messages "
                          "do not include", BrokenReference)
            if by_id[mid] in in_set:
                self.report.add("warning", f"message {mid}", "listed twice in context; used once", aid)
                continue
            order.append(by_id[mid])
            in_set.add(by_id[mid])
        if msgs and not order:
            self.report.add("warning", "in_context_message_ids", "empty: every message goes to recall storage only",
                            aid)

        fallback = self.time(raw.get("created_at")) or _EPOCH
        times: list[_dt.datetime] = []
        for m in msgs:
            t = self.time(m.get("created_at"))
            if t is None:
                stats["untimed"] = stats.get("untimed", 0) + 1
                t = times[-1] if times else fallback
            times.append(t)

        ctx_items: list[_Item] = []
        for pos, j in enumerate(order):
            ctx_items += self._items(msgs[j], times[j], True, pos == 0, system, aid, f"{where}.messages[{j}]", stats)
        old_items: list[_Item] = []
        for j, m in enumerate(msgs):
            if j not in in_set:
                old_items += self._items(m, times[j], False, False, system, aid, f"{where}.messages[{j}]", stats)

        originals: dict[str, Any] = {}
        if order and msgs[order[0]].get("role") == "system" and isinstance(msgs[order[0]].get("created_at"), str):
            originals["system"] = {"created_at": msgs[order[0]]["created_at"]}
        summary = ""
        if ctx_items and ctx_items[0].msg.kind == "summary":
            env = _envelope(ctx_items[0].msg.content)
            summary = _summary_body(env) if env is not None else None
            if summary is None:  # role summary, plain text
                summary = ctx_items[0].msg.content
            raw_summary = msgs[by_id[str(ctx_items[0].msg.letta_id)]]
            originals["summary"] = {"summary": summary, "role": raw_summary.get("role"),
                                    "content": raw_summary.get("content"), "created_at": raw_summary.get("created_at")}
            self.report.add("mapped", f"summary message {ctx_items[0].msg.letta_id}",
                            f"Letta's summary -> vmem summary ({len(summary)} characters)" if summary else
                            "Letta's note that older messages were hidden, with no summary text -> empty summary", aid)
            ctx_items = ctx_items[1:]
            stats["summary"] = 1
        for it in ctx_items:
            if it.msg.kind == "summary":
                self.report.add("warning", f"message {it.msg.letta_id}", "a second summary in context; kept as a "
                                "user message where it stands", aid)
        in_ctx, out_ctx = self._pair(ctx_items, old_items, aid, stats)
        stats["in_context"] = len(in_ctx)
        stats["out_of_context"] = len(out_ctx)
        return summary, in_ctx, out_ctx, originals

    def _items(self, m: Mapping[str, Any], t: _dt.datetime, ctx: bool, first: bool, system: str, aid: str,
               where: str, stats: dict[str, int]) -> list[_Item]:
        """A Letta message as zero or more chat messages (a tool message may answer several calls)."""
        mid = m["id"]
        role = self.get(m, "role", str, where, required=True)
        if role not in _ROLES:
            self.report.add("skipped", f"message {mid}", f"unknown role {role!r}", aid)
            return []
        content = m.get("content")
        if content is None and isinstance(m.get("text"), str):
            content = m["text"]  # the oldest exports
        flat = self._flatten(content, where, stats)
        name = self.get(m, "name", str, where)
        if flat.reasoning and role not in ("assistant", "approval"):
            flat.dropped.append("reasoning outside an assistant message")
            stats["dropped:reasoning outside an assistant message"] = stats.get(
                "dropped:reasoning outside an assistant message", 0) + 1
        base = dict(timestamp=t, letta_id=mid, dropped=tuple(flat.dropped), parts=tuple(flat.parts))

        if role == "system":
            if first or (system and flat.text.startswith(system)):
                stats["compiled_prompts"] = stats.get("compiled_prompts", 0) + 1
                return []
            return [_Item(ChatMessage("system", flat.text, name=name, **base), ctx)]
        if role in ("user", "summary"):
            text = flat.text
            env = _envelope(text)
            if env is not None:
                kind = env["type"]
                if kind == "user_message" and isinstance(env.get("message"), str):
                    text = env["message"]
                    if name is None and isinstance(env.get("name"), str):
                        name = env["name"]
                    stats["unwrapped"] = stats.get("unwrapped", 0) + 1
                elif kind in ("heartbeat", "login") or kind == "system_alert" and _summary_body(env) is None:
                    key = kind + "s"
                    stats[key] = stats.get(key, 0) + 1
            if role == "summary" and (env is None or _summary_body(env) is None):
                # a summary-role message in another shape: give it the envelope its kind needs
                inner = env.get("message") if env is not None else None
                text = _summary_envelope(inner if isinstance(inner, str) else text, t)
            return [_Item(ChatMessage("user", text, name=name, **base), ctx)]
        if role in ("assistant", "approval"):
            calls = self._calls(m, flat, where, aid, stats)
            if role == "approval" and not calls:
                return self._approval_answer(m, t, ctx, where, aid, stats)
            if role == "approval":
                stats["approval_requests"] = stats.get("approval_requests", 0) + 1
            return [_Item(ChatMessage("assistant", flat.text, tool_calls=tuple(calls), name=name,
                                      reasoning=flat.reasoning, **base), ctx, approval=role == "approval")]
        # tool / function: one result per return
        returns = self._returns(m, flat, where)
        if not returns:
            self.report.add("warning", f"message {mid}", "a tool message with no tool_call_id: not imported", aid)
            return []
        out = []
        for tcid, text in returns:
            out.append(_Item(ChatMessage("tool", text, tool_call_id=tcid, name=name, **base), ctx, result_for=tcid))
        return out

    def _calls(self, m: Mapping[str, Any], flat: _Flat, where: str, aid: str, stats: dict[str, int]) -> list[ToolCall]:
        raw_calls = self.get(m, "tool_calls", list, where, [])
        calls: list[ToolCall] = []
        for k, c in enumerate(raw_calls):
            w = f"{where}.tool_calls[{k}]"
            if not isinstance(c, dict):
                self.fail(w, "must be an object")
            fn = self.get(c, "function", dict, w, {})
            cname = self.get(fn, "name", str, w + ".function")
            if not cname:
                self.fail(w, "a tool call with no function name")
            args = fn.get("arguments", "{}")
            if not isinstance(args, str):
                args = json.dumps(args, ensure_ascii=False)
            cid = self.get(c, "id", str, w)
            if not cid:
                cid = f"call-{m['id']}-{k}"
                self.report.add("warning", f"message {m['id']}", f"tool call {cname} has no id; named it {cid}", aid)
            calls.append(ToolCall(cid, cname, args))
        if not calls:
            calls = list(flat.calls)  # providers that keep calls as content parts only
        unique: list[ToolCall] = []
        for c in calls:
            if any(u.id == c.id for u in unique):
                self.report.add("warning", f"message {m['id']}", f"tool call id {c.id} appears twice; kept once", aid)
                continue
            unique.append(c)
        return unique

    def _returns(self, m: Mapping[str, Any], flat: _Flat, where: str) -> list[tuple[str, str]]:
        """(tool_call_id, text) of each result a tool message holds."""
        out: list[tuple[str, str]] = []
        returns = self.get(m, "tool_returns", list, where, [])
        for k, r in enumerate(returns):
            if not isinstance(r, dict):
                self.fail(f"{where}.tool_returns[{k}]", "must be an object")
            self.fields(r, _TOOL_RETURN_FIELDS, "tool returns")
            tcid = r.get("tool_call_id")
            if not isinstance(tcid, str) or not tcid:
                continue
            text = _result_text(r.get("func_response"))
            if text is None:
                text = flat.text if len(returns) == 1 else ""
            out.append((tcid, text))
        if out:
            return out
        if flat.returns:
            return list(flat.returns)
        tcid = self.get(m, "tool_call_id", str, where)
        return [(tcid, flat.text)] if tcid else []

    def _approval_answer(self, m: Mapping[str, Any], t: _dt.datetime, ctx: bool, where: str, aid: str,
                         stats: dict[str, int]) -> list[_Item]:
        """A human's answer to an approval request: not a chat message; tool returns in it are results."""
        items = []
        for a in self.get(m, "approvals", list, where, []):
            if isinstance(a, dict) and isinstance(a.get("tool_call_id"), str) and (
                    "func_response" in a or "status" in a and "approve" not in a):
                text = _result_text(a.get("func_response")) or ""
                items.append(_Item(ChatMessage("tool", text, t, tool_call_id=a["tool_call_id"], letta_id=m["id"]),
                                   ctx, result_for=a["tool_call_id"], weak=True))
        stats["approval_answers"] = stats.get("approval_answers", 0) + 1
        return items

    def _flatten(self, content: Any, where: str, stats: dict[str, int]) -> _Flat:
        flat = _Flat()
        if content is None:
            return flat
        if isinstance(content, str):
            flat.text = content
            return flat
        if not isinstance(content, list):
            self.fail(where, f"'content' must be a string or a list of parts, got "
                      f"{_JSON_NAMES.get(type(content), type(content).__name__)}")
        texts: list[str] = []
        reasoning: list[str] = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
                continue
            if not isinstance(part, dict):
                flat.dropped.append("malformed part")
                continue
            kind = part.get("type", "text" if "text" in part else None)
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "reasoning" and isinstance(part.get("reasoning"), str):
                reasoning.append(part["reasoning"])
                stats["reasoning_parts"] = stats.get("reasoning_parts", 0) + 1
                if part.get("signature"):
                    flat.dropped.append("reasoning signature")
            elif kind == "summarized_reasoning":
                pieces = [s.get("text") for s in part.get("summary") or () if isinstance(s, dict)]
                reasoning.append("\n\n".join(p for p in pieces if isinstance(p, str)))
                stats["reasoning_parts"] = stats.get("reasoning_parts", 0) + 1
                if part.get("encrypted_content"):
                    flat.dropped.append("encrypted reasoning")
            elif kind == "redacted_reasoning":
                flat.dropped.append("redacted reasoning")
            elif kind == "omitted_reasoning":
                flat.dropped.append("omitted reasoning")
            elif kind == "image":
                texts.append("[image omitted]")
                flat.dropped.append("image")
            elif kind == "tool_call" and isinstance(part.get("id"), str) and isinstance(part.get("name"), str):
                args = part.get("input")
                flat.calls.append(ToolCall(part["id"], part["name"],
                                           json.dumps(args if isinstance(args, dict) else {}, ensure_ascii=False)))
            elif kind == "tool_return" and isinstance(part.get("tool_call_id"), str):
                flat.returns.append((part["tool_call_id"], str(part.get("content") or "")))
            else:
                flat.dropped.append(f"{kind or 'untyped'} part")
        flat.text = "\n\n".join(texts)
        if len(texts) > 1:
            flat.parts = texts
        flat.reasoning = "\n\n".join(reasoning)
        for d in flat.dropped:
            key = "dropped:" + d
            stats[key] = stats.get(key, 0) + 1
        return flat

    def _pair(self, ctx_items: list[_Item], old_items: list[_Item], aid: str,
              stats: dict[str, int]) -> tuple[list[ChatMessage], list[ChatMessage]]:
        """Both lists with each call's result right after it, wherever the file had it.

        A result goes where its call is (into or out of the context); a call with no
        result gets a synthetic failed one; a result whose call is nowhere stays out of
        context (out of the queue when it was in it).
        """
        _merge_approvals(ctx_items)
        _merge_approvals(old_items)
        results: dict[str, list[_Item]] = {}
        call_ids: set[str] = set()
        for it in ctx_items + old_items:
            if it.result_for is not None:
                results.setdefault(it.result_for, []).append(it)
            call_ids.update(c.id for c in it.msg.tool_calls)
        used: set[int] = set()
        placed_calls: set[str] = set()
        moved_out: list[ChatMessage] = []
        counts = {"tool_calls": 0, "paired": 0, "synthesized": 0, "moved": 0, "orphans": 0}

        def emit(items: list[_Item], in_ctx: bool) -> list[ChatMessage]:
            out: list[ChatMessage] = []
            for it in items:
                m = it.msg
                if it.result_for is not None:
                    if it.result_for in call_ids:
                        continue  # placed with its call
                    if it.weak:
                        continue
                    counts["orphans"] += 1
                    where = "moved out of the context to recall storage" if in_ctx else "kept in recall storage only"
                    self.report.add("warning", f"message {m.letta_id}", f"a result for call {m.tool_call_id}, "
                                    f"which no message makes; {where}", aid)
                    (moved_out if in_ctx else out).append(m)
                    continue
                out.append(m)
                for call in m.tool_calls:
                    counts["tool_calls"] += 1
                    reused = call.id in placed_calls
                    placed_calls.add(call.id)
                    options = [r for r in results.get(call.id, ()) if id(r) not in used]
                    options.sort(key=lambda r: (r.weak, r.ctx != in_ctx))
                    if options and not reused:
                        pick = options[0]
                        used.add(id(pick))
                        counts["paired"] += 1
                        if pick.ctx != in_ctx:
                            counts["moved"] += 1
                        out.append(replace(pick.msg, name=pick.msg.name or call.name))
                        continue
                    counts["synthesized"] += 1
                    why = f"reuses call id {call.id}" if reused else "has no result in the file"
                    self.report.add("warning", f"message {m.letta_id}", f"tool call {call.name} ({call.id}) {why}; "
                                    "added a failed result so the history stays valid", aid)
                    out.append(ChatMessage("tool", _NO_RESULT, m.timestamp, tool_call_id=call.id, name=call.name,
                                           letta_id=m.letta_id, synthetic=True))
            return out

        in_ctx = emit(ctx_items, True)
        out_ctx = emit(old_items, False) + moved_out
        extra = [r for rs in results.values() for r in rs if id(r) not in used and not r.weak and
                 r.result_for in call_ids]
        for r in extra:
            self.report.add("skipped", f"message {r.msg.letta_id}",
                            f"a second result for call {r.result_for}; the first was kept", aid)
        if counts["moved"]:
            self.report.add("note", "tool results", f"{counts['moved']} moved into or out of the context to stay "
                            "with their calls", aid)
        counts["duplicates"] = len(extra)
        for k, v in counts.items():
            stats[k] = stats.get(k, 0) + v
        return in_ctx, out_ctx

    # -- the report

    def _report_agent(self, spec: AgentSpec, raw: Mapping[str, Any]) -> None:
        aid = spec.id
        st = self.report.stats.setdefault(aid, {})
        add = self.report.add
        for b in spec.blocks:
            flags = [f"{len(b.value)}/{b.limit} characters"]
            if b.read_only:
                flags.append("read-only")
            others = [a for a in b.shared_by if a != aid]
            if others:
                flags.append(f"shared with {', '.join(others)}")
            add("mapped", f"block {b.label}", f"({b.id or 'inline'}) " + ", ".join(flags), aid)
            if len(b.value) > b.limit:
                add("warning", f"block {b.label}", f"holds {len(b.value)} characters, over its limit of {b.limit}", aid)
        add("mapped", "messages", f"{st.get('in_context', 0)} in context -> the queue, "
            f"{st.get('out_of_context', 0)} out of context -> recall storage; tool calls: "
            f"{st.get('paired', 0)}/{st.get('tool_calls', 0)} paired with their results", aid)
        if st.get("compiled_prompts"):
            add("skipped", "compiled system prompt", f"{st['compiled_prompts']} message(s): Letta's rendering of the "
                "system prompt with the blocks, rebuilt by vmem from system and the blocks", aid)
        if st.get("unwrapped"):
            add("note", "user messages", f"{st['unwrapped']} unwrapped from Letta's {{\"type\": \"user_message\"}} "
                "envelope", aid)
        for key, what in (("heartbeats", "heartbeat"), ("logins", "login"), ("system_alerts", "system alert")):
            if st.get(key):
                add("note", f"{what} messages", f"{st[key]} kept as the user messages Letta sent, envelope and all",
                    aid)
        if st.get("reasoning_parts"):
            add("kept", "reasoning", f"{st['reasoning_parts']} native reasoning part(s) kept as data on their "
                "messages (ChatMessage.reasoning), not in the content", aid)
        for key in sorted(k for k in st if k.startswith("dropped:")):
            what = key[len("dropped:"):]
            why = {"image": "vmem's messages are text; a placeholder marks each",
                   "reasoning signature": "a provider token for sending reasoning back; not portable",
                   "encrypted reasoning": "provider-encrypted; not portable",
                   "redacted reasoning": "provider-redacted; nothing readable",
                   "omitted reasoning": "the provider returned none",
                   "reasoning outside an assistant message": "only assistant messages keep reasoning",
                   }.get(what, "not a kind of content vmem knows")
            add("skipped", what, f"{st[key]} part(s): {why}", aid)
        if st.get("approval_requests") or st.get("approval_answers"):
            add("note", "approvals", f"{st.get('approval_requests', 0)} call(s) that waited for a human kept as "
                f"assistant calls; {st.get('approval_answers', 0)} answer(s) not imported as messages", aid)
        if st.get("untimed"):
            add("warning", "timestamps", f"{st['untimed']} message(s) without a valid created_at took the time "
                "of the message before", aid)
        for t in spec.tools:
            m = t.mapping
            if m is not None:
                add("mapped", f"tool {t.name}", f"({t.tool_type}) -> {m.describe()}", aid)
            elif t.tool_type in _SERVER_TOOLS:
                add("kept", f"tool {t.name}", f"({t.tool_type}) declared schema kept; {_SERVER_TOOLS[t.tool_type]}, "
                    "vmem cannot run it", aid)
            elif t.source_code:
                lines = t.source_code.count("\n") + 1
                add("kept", f"tool {t.name}", f"({t.tool_type}) schema and {lines} line(s) of "
                    f"{t.source_type or 'source'} code stored as data; never run", aid)
                if t.name in VMEM_BUILTINS:
                    add("warning", f"tool {t.name}", "custom code under the name of a vmem built-in", aid)
            else:
                add("kept", f"tool {t.name}", f"({t.tool_type}) declared schema kept; no source code and no vmem "
                    "equivalent", aid)
            if t.json_schema is None and m is None:
                add("warning", f"tool {t.name}", "no json_schema: cannot be offered to a model", aid)
        if spec.tool_rules:
            kinds: dict[str, int] = {}
            for r in spec.tool_rules:
                kinds[r.type] = kinds.get(r.type, 0) + 1
            add("kept", "tool rules", ", ".join(f"{k} x{v}" for k, v in kinds.items()) + " kept as data; vmem has no "
                "tool rules (send_message ends a turn, request_heartbeat chains a step)", aid)
        if spec.context_window is None:
            add("warning", "context window", "none in the file (llm_config.context_window, context_window_limit)", aid)
        else:
            add("mapped", "context window", f"{spec.context_window} tokens", aid)
        if spec.letta:
            add("kept", "Letta settings", ", ".join(sorted(spec.letta)) + " kept for export; vmem uses its own "
                "driver and embedder", aid)
        for key in ("secrets", "tool_exec_environment_variables"):
            names = _env_names(raw.get(key))
            if names:
                add("skipped", key, f"{', '.join(names)}: names only reported, values not imported", aid)
        for key, why in (("files_agents", "open files need Letta's file system"),
                         ("source_ids", "data sources are not imported"), ("folder_ids", "folders are not imported"),
                         ("identity_ids", "identities are not imported"),
                         ("initial_message_sequence", "a creation-time setting")):
            if raw.get(key):
                n = len(raw[key]) if isinstance(raw[key], list) else 1
                add("skipped", key, f"{n} item(s): {why}", aid)

    def _report_file(self, doc: Mapping[str, Any], blocks: Mapping[str, Any], tools: Mapping[str, Any],
                     shared: Mapping[str, list[str]], tool_lists: Mapping[str, list[str]]) -> None:
        used_tools = {t for ids in tool_lists.values() for t in ids}
        for bid, raw in blocks.items():
            if bid not in shared:
                self.report.add("skipped", f"block {raw.get('label')} ({bid})", "no agent of the file uses it")
        for tid, raw in tools.items():
            if tid not in used_tools:
                self.report.add("skipped", f"tool {raw.get('name')} ({tid})", "no agent of the file uses it")
        for key, why in (("files", "file contents need Letta's file system"), ("sources", "data sources"),
                         ("mcp_servers", "MCP server connections"), ("skills", "Letta Code skills")):
            items = doc.get(key) or []
            if items:
                names = [str(i.get("name") or i.get("file_name") or i.get("server_name") or i.get("id"))
                         for i in items if isinstance(i, dict)]
                shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
                self.report.add("skipped", key, f"{len(items)} ({shown}): {why}, not imported")
        if self.naive_times:
            self.report.add("note", "timestamps", f"{self.naive_times} without a time zone taken as UTC")
        if self.bad_times:
            self.report.add("warning", "timestamps", f"{self.bad_times} unreadable created_at value(s) replaced")

    def _report_unknown(self) -> None:
        def listed(keys: Mapping[str, int]) -> str:
            return ", ".join(f"{k} (x{n})" if n > 1 else k for k, n in sorted(keys.items()))

        for entity, keys in self.unknown.items():
            self.report.add("warning", f"unknown fields in {entity}", f"{listed(keys)}: ignored (the format evolves)")
        if self.ignored:
            parts = "; ".join(f"{entity}: {listed(keys)}" for entity, keys in self.ignored.items())
            self.report.add("skipped", "Letta bookkeeping", f"{parts}: the Letta server's own ids and housekeeping, "
                            "not imported")

    # -- Letta 0.6/0.7

    def _from_legacy(self, doc: dict[str, Any]) -> dict[str, Any]:
        """The single-agent layout of Letta 0.6/0.7 (blocks and tools inline, context by index)
        rewritten in today's layout."""
        self.fields(doc, _LEGACY_FIELDS, "the top level")
        self.legacy = True
        version = doc.get("version")
        self.report.add("note", "legacy layout", f"a single-agent file of Letta {version or '0.6/0.7'}; read in "
                        "today's layout")
        blocks = []
        for i, b in enumerate(self.get(doc, "core_memory", list, "", [])):
            if not isinstance(b, dict):
                self.fail(f"core_memory[{i}]", "must be an object")
            block = {**b, "id": f"block-{i}"}
            if "metadata" not in block and isinstance(block.get("metadata_"), dict):
                block["metadata"] = block.pop("metadata_")
            blocks.append(block)
        tools = []
        for i, t in enumerate(self.get(doc, "tools", list, "", [])):
            if not isinstance(t, dict):
                self.fail(f"tools[{i}]", "must be an object")
            tools.append({**t, "id": f"tool-{i}"})
        messages = []
        for i, m in enumerate(self.get(doc, "messages", list, "", [])):
            if not isinstance(m, dict):
                self.fail(f"messages[{i}]", "must be an object")
            messages.append({**m, "id": f"message-{i}"})
        ctx = []
        for k in self.get(doc, "in_context_message_indices", list, "", []):
            if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(messages):
                self.fail("in_context_message_indices", f"{k!r} is not the index of a message", BrokenReference)
            ctx.append(f"message-{k}")
        agent = {k: v for k, v in doc.items() if k not in ("core_memory", "tools", "messages",
                                                            "in_context_message_indices", "version",
                                                            "multi_agent_group", "metadata_", "updated_at")}
        agent.update(id="agent-0", block_ids=[b["id"] for b in blocks], tool_ids=[t["id"] for t in tools],
                     messages=messages, in_context_message_ids=ctx)
        if isinstance(doc.get("metadata_"), dict) and "metadata" not in doc:
            agent["metadata"] = doc["metadata_"]
        if isinstance(agent.get("tool_exec_environment_variables"), list):
            agent["tool_exec_environment_variables"] = {
                str(e.get("key")): "" for e in agent["tool_exec_environment_variables"] if isinstance(e, dict)}
        if doc.get("multi_agent_group"):
            self.report.add("skipped", "multi_agent_group", "a Letta 0.6 group: not imported")
        return {"agents": [agent], "blocks": blocks, "tools": tools, "created_at": doc.get("created_at")}


@dataclass
class _Flat:
    """A content list flattened: the text, the reasoning, what was dropped, calls and results in parts."""

    text: str = ""
    reasoning: str = ""
    dropped: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    returns: list[tuple[str, str]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # the text parts, when there are several


_NO_RESULT = json.dumps({"status": "Failed", "message": "no result was recorded for this call "
                         "(imported from a Letta agent file)"})

_JSON_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "an integer",
                                float: "a number", bool: "true/false", type(None): "null"}


def _merge_approvals(items: list[_Item]) -> None:
    """Fold an approval request's calls into the assistant call right before it, as Letta does."""
    i = 1
    while i < len(items):
        it, prev = items[i], items[i - 1]
        if it.approval and prev.msg.role == "assistant" and prev.msg.tool_calls and prev.result_for is None:
            text = "\n\n".join(t for t in (prev.msg.content, it.msg.content) if t)
            calls = prev.msg.tool_calls + tuple(c for c in it.msg.tool_calls
                                                if all(c.id != p.id for p in prev.msg.tool_calls))
            prev.msg = replace(prev.msg, content=text, tool_calls=calls)
            del items[i]
            continue
        i += 1


def _result_text(resp: Any) -> str | None:
    """A tool return's func_response as text (images as a placeholder)."""
    if resp is None:
        return None
    if isinstance(resp, str):
        return resp
    if isinstance(resp, list):
        out = []
        for p in resp:
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str):
                out.append(p["text"])
            elif isinstance(p, dict) and p.get("type") == "image":
                out.append("[image omitted]")
        return "\n".join(out)
    return json.dumps(resp, ensure_ascii=False)


def _env_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return sorted(map(str, value))
    if isinstance(value, list):
        return sorted(str(e.get("key")) for e in value if isinstance(e, dict) and e.get("key"))
    return []


def _no_duplicates(reader: _Reader, ids: Sequence[str], entity: str) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            reader.fail("", f"{entity} id {i!r} is used twice", BrokenReference)
        seen.add(i)


def _parse_time(value: Any) -> _dt.datetime | None:
    """An ISO 8601 string (or epoch seconds) as a datetime, None when it is neither."""
    if isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            return _dt.datetime.fromisoformat(s)
        except ValueError:
            return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return _dt.datetime.fromtimestamp(value, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    return None


# ---------------------------------------------------------------- writing

class _Ids:
    """File-local ids Letta accepts (``prefix-N``, unique in the file): a valid one is kept,
    others get the lowest free number, so exporting an export gives the same ids."""

    def __init__(self) -> None:
        self.taken: set[str] = set()
        self.next: dict[str, int] = {}  # no free number below this one

    def reserve(self, candidates: Iterable[str | None], prefix: str) -> set[str]:
        """Claim the valid candidates that occur once; return them."""
        seen: dict[str, int] = {}
        for c in candidates:
            if c and _ID_RE[prefix].match(c):
                seen[c] = seen.get(c, 0) + 1
        kept = {c for c, n in seen.items() if n == 1 and c not in self.taken}
        self.taken |= kept
        return kept

    def new(self, prefix: str) -> str:
        n = self.next.get(prefix, 0)
        while f"{prefix}-{n}" in self.taken:
            n += 1
        self.next[prefix] = n + 1
        self.taken.add(f"{prefix}-{n}")
        return f"{prefix}-{n}"


_LETTA_NAME = re.compile(r"[^\w '\-]")


def write_agent_file(af: AgentFile) -> dict[str, Any]:
    """The AgentFile as a Letta agent file document (a dict ready for ``json.dumps``).

    It has what Letta's ``AgentFileSchema`` requires: file-local ids of the form
    ``agent-0`` (kept from ``af`` where valid and unique, new otherwise), each agent's
    compiled system message at context position 0, its summary as Letta's summary message
    at position 1, tool results as Letta writes them, and an ``llm_config``. vmem's
    archival passages, which the format lacks, go under the top-level ``x_vmem`` key,
    which Letta ignores. A group that names an agent ``af`` does not hold is left out.
    """
    ids = _Ids()
    agent_ids = _assign(ids, "agent", af.agents)
    block_objs = _unique(b for a in af.agents for b in a.blocks)
    tool_objs = _unique(t for a in af.agents for t in a.tools)
    block_ids = _assign(ids, "block", block_objs)
    tool_ids = _assign(ids, "tool", tool_objs)
    group_ids = _assign(ids, "group", af.groups)
    kept = ids.reserve([m.letta_id for a in af.agents for m in (*a.out_of_context, *a.in_context)], "message")

    def block_id(b: BlockSpec) -> str:
        return block_ids[b.id or id(b)]

    def tool_id(t: ToolSpec) -> str:
        return tool_ids[t.id or id(t)]

    agents = []
    ext_agents: dict[str, Any] = {}
    for a in af.agents:
        aid = agent_ids[a.id or id(a)]
        name = _LETTA_NAME.sub("_", a.name).strip() or "agent"
        ext: dict[str, Any] = {}
        llm_config, made_up = _llm_config(a)
        if made_up:
            ext["generated"] = made_up
        if name != a.name:
            ext["name"] = a.name
        if a.passages:
            ext["passages"] = [{"text": p.text, "tags": list(p.tags), "created_at": p.timestamp.isoformat()}
                               for p in a.passages]
        if a.memory:
            ext["memory"] = _thaw(a.memory)
        if ext:
            ext_agents[aid] = ext
        messages, in_ctx = _write_messages(a, aid, ids, kept, af)
        doc = _thaw(a.letta)
        doc.update({
            "id": aid, "name": name, "system": a.system, "description": a.description or None,
            "block_ids": [block_id(b) for b in a.blocks], "tool_ids": [tool_id(t) for t in a.tools],
            "tool_rules": [{"tool_name": r.tool_name, "type": r.type, **_thaw(r.params)} for r in a.tool_rules],
            "llm_config": llm_config, "context_window_limit": None,
            "messages": messages, "in_context_message_ids": in_ctx,
            "memory_blocks": [], "tools": [], "files_agents": [], "initial_message_sequence": None,
            "group_ids": [group_ids[g.id or id(g)] for g in af.groups if g.manager_agent_id == a.id],
            "include_base_tools": False, "include_multi_agent_tools": False, "include_base_tool_rules": False,
            "include_default_source": False,
        })
        if a.agent_type is not None:
            doc["agent_type"] = a.agent_type
        agents.append(doc)

    blocks = []
    for b in block_objs:
        doc = {k: v for k, v in _thaw(b.letta).items() if k in _BLOCK_PASSED}
        doc.update({"id": block_id(b), "label": b.label, "value": b.value, "limit": b.limit,
                    "description": b.description or None, "read_only": b.read_only})
        blocks.append(doc)
    tools = []
    for t in tool_objs:
        doc = {k: v for k, v in _thaw(t.letta).items() if k in _TOOL_PASSED}
        doc.update({"id": tool_id(t), "name": t.name, "tool_type": t.tool_type, "description": t.description or None,
                    "json_schema": _thaw(t.json_schema) if t.json_schema is not None else None,
                    "source_code": t.source_code, "source_type": t.source_type})
        tools.append(doc)
    known_agents = {a.id for a in af.agents}
    groups = []
    for g in af.groups:
        if not set(g.agent_ids) <= known_agents or (g.manager_agent_id and g.manager_agent_id not in known_agents):
            continue  # a group of agents this file does not hold
        config = {"manager_type": g.manager_type, **_thaw(g.config)}
        if g.manager_agent_id:
            config["manager_agent_id"] = agent_ids[g.manager_agent_id]
        by_id = {b.id: b for b in block_objs if b.id}
        shared = [by_id[b] for b in g.shared_block_ids if b in by_id]
        groups.append({"id": group_ids[g.id or id(g)], "agent_ids": [agent_ids[x] for x in g.agent_ids],
                       "description": g.description, "manager_config": config,
                       "shared_block_ids": [block_id(b) for b in shared], "project_id": None, "hidden": None})
    return {
        "agents": agents, "groups": groups, "blocks": blocks, "files": [], "sources": [], "tools": tools,
        "mcp_servers": [], "skills": [],
        "metadata": {str(k): v if isinstance(v, str) else json.dumps(_thaw(v)) for k, v in af.metadata.items()},
        "created_at": af.created_at.isoformat() if af.created_at else None,
        EXTENSION_KEY: {"version": EXTENSION_VERSION, "agents": ext_agents},
    }


def _assign(ids: _Ids, prefix: str, objs: Sequence[Any]) -> dict[Any, str]:
    """Letta ids for ``objs``, by their own id (or identity when they have none)."""
    kept = ids.reserve([o.id for o in objs], prefix)
    out: dict[Any, str] = {}
    for o in objs:
        key = o.id or id(o)
        if key not in out:
            out[key] = o.id if o.id in kept else ids.new(prefix)
    return out


def _llm_config(a: AgentSpec) -> tuple[dict[str, Any], list[str]]:
    """Letta's llm_config for ``a`` (it requires one), and which of its parts were made up."""
    made_up = []
    given = a.letta.get("llm_config")
    cfg = _thaw(given) if isinstance(given, Mapping) else {}
    if not cfg:
        made_up.append("llm_config")
        cfg["model_endpoint_type"] = "openai"  # vmem's driver speaks the OpenAI API
    cfg["model"] = a.model
    if a.model is None:
        cfg["model"] = "unknown"
        made_up.append("model")
    cfg["context_window"] = a.context_window
    if a.context_window is None:
        cfg["context_window"] = DEFAULT_CONTEXT_WINDOW
        made_up.append("context_window")
    return cfg, made_up


def _write_messages(a: AgentSpec, aid: str, ids: _Ids, kept: set[str], af: AgentFile) -> tuple[list, list[str]]:
    """Letta message dicts (history order) and the in-context ids (context order)."""
    used: set[str] = set()

    def mid(m: ChatMessage | None) -> str:
        if m is not None and m.letta_id in kept and m.letta_id not in used:
            used.add(m.letta_id)
            return m.letta_id
        return ids.new("message")

    # the time of what Letta needs and vmem has not: the compiled prompt and the summary message
    # (deterministic, so that exporting twice gives the same file)
    first = a.in_context[0].timestamp if a.in_context else (
        a.out_of_context[-1].timestamp if a.out_of_context else af.created_at or _EPOCH)
    system_at = (a.originals.get("system") or {}).get("created_at") or first.isoformat()
    system = {"type": "message", "id": mid(None), "role": "system", "content": [_text(a.system)],
              "agent_id": aid, "created_at": system_at}
    out = [system]
    out += [_message(m, mid(m), aid) for m in a.out_of_context]
    ctx = [system["id"]]
    if a.summary:
        was = a.originals.get("summary") or {}
        if was.get("summary") == a.summary and was.get("role") in ("user", "system", "summary") and was.get("content"):
            # the summary the file had, unchanged: as the file wrote it
            summary = {"type": "message", "id": mid(None), "role": was["role"], "content": _thaw(was["content"]),
                       "agent_id": aid, "created_at": was.get("created_at") or first.isoformat()}
        else:
            summary = {"type": "message", "id": mid(None), "role": "user",
                       "content": [_text(_summary_envelope(a.summary, first))], "agent_id": aid,
                       "created_at": first.isoformat()}
        out.append(summary)
        ctx.append(summary["id"])
    for m in a.in_context:
        doc = _message(m, mid(m), aid)
        out.append(doc)
        ctx.append(doc["id"])
    return out, ctx


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _message(m: ChatMessage, mid: str, aid: str) -> dict[str, Any]:
    content = m.content
    if m.role == "user" and m.kind == "message" and _envelope(content) is not None:
        # user words that look like an envelope travel inside one, as MemGPT-style Letta sends them
        content = json.dumps({"type": "user_message", "message": content, "time": _letta_time(m.timestamp)},
                             indent=2, ensure_ascii=False)
    parts: list[dict[str, Any]] = []
    if m.reasoning:
        parts.append({"type": "reasoning", "is_native": True, "reasoning": m.reasoning, "signature": None})
    if m.parts and "\n\n".join(m.parts) == content:  # several text parts in the file, unchanged
        parts.extend(_text(p) for p in m.parts)
    elif content or m.role != "assistant" or not m.tool_calls:
        parts.append(_text(content))  # Letta refuses to send an assistant message with no text and no call
    doc: dict[str, Any] = {"type": "message", "id": mid, "role": m.role, "content": parts, "name": m.name,
                           "agent_id": aid, "created_at": m.timestamp.isoformat(),
                           "tool_calls": [c.to_openai() for c in m.tool_calls] or None,
                           "tool_call_id": m.tool_call_id}
    if m.role == "tool":
        try:
            obj = json.loads(m.content)
        except ValueError:
            obj = None
        failed = isinstance(obj, dict) and obj.get("status") in ("Failed", "error")
        doc["tool_returns"] = [{"tool_call_id": m.tool_call_id, "status": "error" if failed else "success",
                                "func_response": m.content, "stdout": None, "stderr": None}]
    return doc


def dump_agent_file(af: AgentFile, path: str | os.PathLike[str], *, indent: int | None = 2) -> None:
    """Write ``write_agent_file(af)`` to ``path`` as UTF-8 JSON, atomically (a temporary
    file in the same directory, then a rename): a failed export leaves no partial file."""
    text = json.dumps(write_agent_file(af), indent=indent, ensure_ascii=False)
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # an ordinary file, not mkstemp's owner-only one
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
