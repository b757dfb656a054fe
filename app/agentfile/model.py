"""The agent file's model: what a Letta agent file holds, as vmem reads and writes it.

Frozen dataclasses (AgentFile > AgentSpec > ChatMessage, BlockSpec, ToolSpec, ...), the
errors, the import report, and the tables that map Letta's tools to vmem's built-ins.
No I/O here: :mod:`.reading` builds these from a file, :mod:`.writing` turns them back.

Interface::

    from vmem.app.agentfile.model import AgentFile, AgentSpec, ChatMessage, ImportReport
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import types
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping, Sequence

from vmem.app.agentfile.envelopes import _envelope, _summary_body

UTC = _dt.timezone.utc
_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=UTC)

#: Files larger than this are refused before they are read (pass ``max_bytes`` to raise it).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
#: A file may hold one JSON object or array per this many bytes, on average (see ``_Reader._dense``).
BYTES_PER_CONTAINER = 32
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
    "archival_memory_update": ("old_id", "new_content", "tags"),
    "archival_memory_search": ("query", "tags", "tags_match", "start_date", "end_date", "as_of", "page"),
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
    "archival_memory_update": ("archival_memory_update", (), ""),
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
    "archival_memory_update": ("old_id", "new_content", "tags"),
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
    # Letta has no such tool: exported as a declared custom tool (schema, no source), which maps back
    "archival_memory_update": ("archival_memory_update", "custom"),
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
