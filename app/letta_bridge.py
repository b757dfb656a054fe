"""Letta agent files in and out of vmem: the bridge between :mod:`vmem.app.agentfile` and Memory.

Interface::

    from vmem.app.letta_bridge import import_agent_file, export_agent_file
    result = import_agent_file("evie.af", "evie")    # a vmem agent per agent of the file
    print(result.report)                             # mapped / kept as data / skipped / warnings
    result.directories                               # {file-local agent id: its directory}
    af = export_agent_file("evie", "evie-copy.af")   # the agent(s) back into a Letta file

Where the agents go: a file with one agent (or ``agent=`` naming one) becomes the
directory ``target``; a file with several becomes ``target/<name>`` for each. Nothing is
half-created: everything is built in a temporary directory beside ``target`` and renamed
into place at the end; a failure anywhere removes it.

What an import maps (the format layer, :mod:`vmem.app.agentfile`, reads and checks the file
first): the system instructions; each block (label, value, character limit, description,
read-only) as a core memory block; the context window; the in-context messages into the
queue and recall storage (OpenAI roles, tool calls with their results, timestamps); the
out-of-context history into recall storage only, behind Letta's summary, which becomes
the recursive summary (:meth:`Memory.import_history`); vmem's own archival passages
(the ``x_vmem`` extension). Letta's memory tools are vmem's built-ins.

What it keeps as data, in the directory's store under the state key :data:`KEPT_KEY` and
given back by an export: every tool as the file declares it (schema; a custom tool's
source code, which vmem never runs: no flag turns it on), the tool rules, Letta's settings
(llm_config, embedding_config, ...), the agent type, model and description, each block's
Letta id and extra fields, the native reasoning of messages, the file's groups.

What it skips is listed in the report, never dropped silently. A block several agents of a
file share (Letta's shared memory blocks) becomes one shared block, stored once in
``target/shared-blocks.db`` and attached by each agent (:meth:`Memory.attach_block`): an
edit by one agent reaches the others at their next step; an export of the parent directory
writes it as one block again. Into a PostgreSQL location (one agent) it is a copy.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping, cast

from vmem.app.agentfile import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_BYTES,
    AgentFile,
    AgentSpec,
    ArchivalPassage,
    BlockSpec,
    ChatMessage,
    GroupSpec,
    ImportReport,
    ToolCall,
    ToolRule,
    ToolSpec,
    builtin_tool,
    dump_agent_file,
    read_agent_file,
)
from vmem.app.agentfile.model import Role
from vmem import PageKind, make_page_id, page_serial
from vmem.kernel import ContextWindowError, Memory, MemoryConfig
from vmem.storage import Message, StoreNotFoundError, display, is_url, open_store
from vmem.storage import NotFoundError as _StoreNotFound
from vmem.storage.location import open_shared_blocks
from vmem.storage.postgres import PgStore

__all__ = ["KEPT_KEY", "ExportResult", "ImportResult", "LettaBridgeError", "export_agent_file",
           "import_agent_file", "kept_data"]

#: The store state key under which an import keeps what vmem does not act on.
KEPT_KEY = "letta"
_KEPT_FORMAT = 1
_UTC = _dt.timezone.utc


class LettaBridgeError(ValueError):
    """An import or export that cannot be done (a target in the way, a window too small); one line."""


@dataclass
class ImportResult:
    """What :func:`import_agent_file` made: the memories' locations (directories, or a PostgreSQL
    URL), by the file's agent ids, and the report."""

    directories: dict[str, Path | str]
    report: ImportReport
    file: AgentFile


@dataclass
class ExportResult:
    """What :func:`export_agent_file` wrote: the file's content and what could not go in it."""

    file: AgentFile
    notes: list[str] = field(default_factory=list)


# ================================================================ import


def import_agent_file(source: str | os.PathLike[str] | bytes, target: str | os.PathLike[str], *,
                      agent: str | None = None, window: int | None = None, max_bytes: int = DEFAULT_MAX_BYTES,
                      embedder: Any = None, durability: str = "full") -> ImportResult:
    """Create a vmem agent for each agent of a Letta agent file (path or bytes) under ``target``.

    ``agent``: import only this agent (its file-local id or name), into ``target`` itself.
    ``window``: the context window in tokens, instead of the file's. ``target`` must not exist
    or be an empty directory. Raises :class:`vmem.app.agentfile.AgentFileError` for a file
    that cannot be imported and :class:`LettaBridgeError` for a target or agent that cannot
    be made; either way nothing is left behind.
    """
    af = read_agent_file(source, max_bytes=max_bytes)
    size = len(source) if isinstance(source, (bytes, bytearray)) else os.stat(source).st_size
    report = af.report
    agents = list(af.agents)
    if agent is not None:
        try:
            agents = [af.agent(agent)]
        except KeyError:
            held = ", ".join(f"{a.id} ({a.name})" for a in af.agents)
            raise LettaBridgeError(f"no agent {agent!r} in the file; it holds {held}") from None
    if not agents:
        raise LettaBridgeError("the file holds no agent")
    _bounded_writes(agents, size)
    if is_url(target):
        return _import_to_url(af, agents, str(target), window=window, embedder=embedder, durability=durability)
    target = Path(target)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise LettaBridgeError(f"{target} exists and is not an empty directory; name a new one")
    if not target.parent.is_dir():
        raise LettaBridgeError(f"directory {target.parent} does not exist")
    several = len(agents) > 1
    names = _directory_names(agents) if several else {agents[0].id: ""}
    chosen = {a.id for a in agents}
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".importing", dir=target.parent))
    mask = os.umask(0)
    os.umask(mask)
    work.chmod(0o777 & ~mask)  # an ordinary directory, not mkdtemp's owner-only one
    try:
        directories: dict[str, Path | str] = {}
        shared = _shared_store(agents, chosen, work / SHARED_BLOCKS_NAME) if several else {}
        for spec in agents:
            where = work / names[spec.id] if several else work / "agent"
            _import_agent(spec, af, where, report, window=window, several=several, embedder=embedder,
                          durability=durability, shared=shared, shared_path=work / SHARED_BLOCKS_NAME)
            directories[spec.id] = target / names[spec.id] if several else target
        built = work if several else work / "agent"
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(built, target)
        return ImportResult(directories, report, af)
    finally:
        shutil.rmtree(work, ignore_errors=True)


#: An import writes at most this many times the file's bytes (plus 1 MB), before SQLite's own overhead.
WRITE_FACTOR = 8
#: Where an import of several agents keeps the blocks they share (in the target directory).
SHARED_BLOCKS_NAME = "shared-blocks.db"


def _shares(block: BlockSpec, chosen: set[str]) -> bool:
    """Whether ``block`` is shared by two or more of the agents being imported."""
    return len(set(block.shared_by) & chosen) > 1


def _shared_store(agents: list[AgentSpec], chosen: set[str], path: Path) -> dict[str, str]:
    """Create each block the imported agents share, once, in the shared block store at ``path``;
    its name per block id (the label, made unique)."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    store = None
    try:
        for spec in agents:
            for b in spec.blocks:
                key = b.id or b.label
                if key in names or not _shares(b, chosen):
                    continue
                name, n = b.label, 2
                while name in taken:
                    name, n = f"{b.label}-{n}", n + 1
                taken.add(name)
                names[key] = name
                store = store or open_shared_blocks(path)
                limit = b.limit if len(b.value) <= b.limit else editable_limit(len(b.value))
                store.create(name, b.value, limit=limit, description=b.description, read_only=b.read_only, agent="import")
    finally:
        if store is not None:
            store.close()
    return names


def _bounded_writes(agents: list[AgentSpec], size: int) -> None:
    """LettaBridgeError if importing ``agents`` would write more than :data:`WRITE_FACTOR` times
    the file's ``size``: a block shared by many agents is copied into each one's directory (a block
    belongs to one store) and recorded in its trace, so 60 agents sharing a 1 MB block would write
    120 MB from a 1 MB file. Counted before anything is written."""
    estimate = 0
    chosen = {a.id for a in agents}
    seen: set[str] = set()
    for spec in agents:
        blocks = 0
        for b in spec.blocks:
            if _shares(b, chosen) and (b.id or b.label) in seen:
                continue  # stored once, in the shared block store
            seen.add(b.id or b.label)
            blocks += len(b.value.encode("utf-8", "replace")) + len(b.description)
        messages = sum(len(m.content.encode("utf-8", "replace")) for m in (*spec.out_of_context, *spec.in_context))
        estimate += 2 * blocks + 2 * messages + len(spec.system.encode("utf-8", "replace"))
    limit = WRITE_FACTOR * size + (1 << 20)
    if estimate > limit:
        raise LettaBridgeError(
            f"importing the file's {len(agents)} agent(s) would write about {estimate:,} bytes, more than "
            f"{WRITE_FACTOR} times the file's {size:,} (its agents share large blocks, each copied per agent): "
            f"import the agents you need one at a time with agent= (vmem import --agent NAME)")


def _import_to_url(af: AgentFile, agents: list[AgentSpec], url: str, *, window: int | None, embedder: Any,
                   durability: str) -> ImportResult:
    """One agent into a PostgreSQL location (an agent that is not there yet); on any error the
    agent is deleted from the database again."""
    if len(agents) > 1:
        names = ", ".join(f"{a.id} ({a.name})" for a in agents)
        raise LettaBridgeError(f"a PostgreSQL location holds one agent and the file holds several ({names}): "
                               "choose one with agent=..., once per location")
    if Memory.exists(url):
        raise LettaBridgeError(f"{display(url)} holds an agent already; name a new one")
    spec = agents[0]
    try:
        _import_agent(spec, af, url, af.report, window=window, several=False, embedder=embedder,
                      durability=durability)
    except BaseException:
        try:
            with open_store(url, create=False, embedder=embedder) as store:
                if isinstance(store, PgStore):  # it is: a URL
                    store.drop()
        except StoreNotFoundError:
            pass
        raise
    return ImportResult({spec.id: url}, af.report, af)


def _directory_names(agents: list[AgentSpec]) -> dict[str, str]:
    """A directory name per agent: its name made safe for a path, unique in the file."""
    out: dict[str, str] = {}
    used: set[str] = set()
    for i, a in enumerate(agents):
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", a.name).strip("._-") or f"agent-{i}"
        name, n = base, 2
        while name.lower() in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name.lower())
        out[a.id] = name
    return out


def editable_limit(length: int) -> int:
    """The limit an imported block over its own gets: its value's length and room to edit it
    (a tenth more, at least 100 characters), so that the agent's next append is not refused."""
    return length + max(100, length // 10)


def _import_agent(spec: AgentSpec, af: AgentFile, path: Path | str, report: ImportReport, *, window: int | None,
                  several: bool, embedder: Any, durability: str, shared: Mapping[str, str] | None = None,
                  shared_path: Path | None = None) -> None:
    add = report.add
    aid = spec.id
    win = window or spec.context_window or DEFAULT_CONTEXT_WINDOW
    if window and spec.context_window and window != spec.context_window:
        add("note", "context window", f"{window} tokens as asked, instead of the file's {spec.context_window}", aid)
    elif spec.context_window is None and not window:
        add("note", "context window", f"none in the file: vmem's default of {win} tokens", aid)
    saved = spec.memory.get("config")  # a vmem agent exported: its memory as it was set up
    try:
        if saved:
            config = MemoryConfig.from_dict({**saved, "window": win})
        else:
            config = MemoryConfig(window=win, reserve_output=min(1024, win // 4))
    except (ValueError, TypeError) as exc:
        raise LettaBridgeError(f"agent {spec.name}: context window {win}: {exc}") from None
    if saved:
        add("mapped", "memory configuration", "vmem's, as exported (output reserve, watermarks, prefetch, "
            "working set, page size)", aid)
    blocks: dict[str, dict[str, Any]] = {}
    shared = shared or {}
    attach = [(b.label, shared[b.id or b.label]) for b in spec.blocks if (b.id or b.label) in shared]
    for b in spec.blocks:
        if (b.id or b.label) in shared:
            continue
        limit = b.limit
        if len(b.value) > limit:
            limit = editable_limit(len(b.value))
            add("warning", f"block {b.label}", f"limit raised from {b.limit} to {limit} characters: its value holds "
                f"{len(b.value)} and vmem refuses a block over its limit, so the block keeps room for "
                f"{limit - len(b.value)} more to stay editable", aid)
        blocks[b.label] = {"value": b.value, "limit": limit, "description": b.description, "read_only": b.read_only}
    copied = [b.label for b in spec.blocks if set(b.shared_by) - {aid} and (b.id or b.label) not in shared]
    if copied:
        add("note", "shared blocks", f"{', '.join(copied)}: a copy in this agent's store (the agents it shares them "
            "with are not imported beside it)", aid)
    if attach:
        add("mapped", "shared blocks", f"{', '.join(label for label, _ in attach)}: one shared block each, stored "
            f"once in {SHARED_BLOCKS_NAME} and attached by every agent of the file that uses it", aid)
    try:
        # a Letta agent's system prompt explains its memory tools itself: no memory instructions beside it;
        # a vmem agent's come back from the extension
        memory = Memory.create(path, system=spec.system, blocks={} if attach else blocks, config=config,
                               embedder=embedder,
                               durability=durability, instructions=spec.memory.get("instructions") or None)
    except ContextWindowError as exc:
        raise LettaBridgeError(f"agent {spec.name}: {exc}; pass a larger window") from None
    try:
        if attach:  # the blocks in the file's order, the shared ones attached
            names = dict(attach)
            try:
                with memory.transaction():
                    for b in spec.blocks:
                        if b.label in names:
                            memory.attach_block(b.label, cast(Path, shared_path), names[b.label])
                        else:
                            memory.add_block(b.label, **blocks[b.label])
            except ContextWindowError as exc:
                raise LettaBridgeError(f"agent {spec.name}: {exc}; pass a larger window") from None
        with memory.transaction():
            reasoning, parts = _messages(memory, spec, report)
            _passages(memory, spec, report)
            memory.store.state[KEPT_KEY] = _kept(spec, af, reasoning, parts)
            memory.log({"e": "import", "format": "letta agent file", "source": report.source, "agent": aid,
                        "name": spec.name})
        memory.check()
        builtins = sorted(set(memory.functions) - {t.builtin for t in spec.tools if t.builtin})
        if builtins:
            add("note", "vmem built-ins", f"{', '.join(builtins)} also offered (vmem gives every agent all its "
                "memory functions)", aid)
        _report_kept(spec, report)
    finally:
        memory.close()


def _messages(memory: Memory, spec: AgentSpec,
              report: ImportReport) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The history (recall only, behind the summary) and the queue, with their times; returns
    the messages' native reasoning and the text parts of those the file wrote in several, by
    recall page id (str keys: the store keeps msgpack)."""
    aid = spec.id
    reasoning: dict[str, str] = {}
    parts: dict[str, list[str]] = {}
    history = [(m.to_openai(), m.timestamp) for m in spec.out_of_context]
    recent: list[tuple[dict[str, Any], _dt.datetime | None]] = [(m.to_openai(), m.timestamp) for m in spec.in_context]
    messages: list[ChatMessage | None] = [*spec.out_of_context, *spec.in_context]  # None: the summary's message
    if spec.summary and not history:
        first = spec.in_context[0].timestamp if spec.in_context else None
        recent.insert(0, ({"role": "system", "content": "Summary of the earlier conversation (the messages it "
                           f"covers were not in the imported file):\n{spec.summary}"}, first))
        messages.insert(0, None)
        report.add("warning", "summary", "the file holds none of the messages it summarises: kept as a queued "
                   "system message, not as vmem's recursive summary", aid)
    try:
        pages = memory.import_history(history, summary=spec.summary if history else "", recent=recent)
    except ContextWindowError as exc:
        raise LettaBridgeError(f"agent {spec.name}: {exc}; pass a larger window") from None
    reasoning.update((str(page), m.reasoning) for page, m in zip(pages, messages) if m is not None and m.reasoning)
    parts.update((str(page), list(m.parts)) for page, m in zip(pages, messages) if m is not None and m.parts)
    if history:
        how = "behind the summary" if spec.summary else "with no summary in the file: stored-only history"
        report.add("mapped", "history", f"{len(history)} out-of-context message(s) -> recall storage, {how}", aid)
    if spec.summary and history:
        report.add("mapped", "summary", f"{len(spec.summary)} characters -> the recursive summary", aid)
    pending = len(memory.state.pending)  # oversize user messages, summarised at the next step
    shortened = sum(1 for m in memory.store.recall.get_many(memory.queue.pages()) if m.meta.get("kind") == "shortened")
    folded = len(recent) - len(memory.queue) - pending
    if folded > 0:
        report.add("note", "context", f"{folded} in-context message(s) do not fit in a {memory.config.window}-token "
                   "window: stored in recall storage behind the summary, the newest queued", aid)
    if pending + shortened:
        report.add("note", "large messages", f"{pending + shortened} too large for the queue: stored whole in recall "
                   "storage, a shortened copy or a summary queued", aid)
    return reasoning, parts


def _passages(memory: Memory, spec: AgentSpec, report: ImportReport) -> None:
    groups: dict[tuple[tuple[str, ...], _dt.datetime], list[str]] = {}
    for p in spec.passages:
        groups.setdefault((p.tags, p.timestamp), []).append(p.text)
    for (tags, at), texts in groups.items():
        memory.archival_insert_many(texts, tags, at)
    if spec.passages:
        report.add("mapped", "archival passages", f"{len(spec.passages)} (vmem's x_vmem extension) -> archival "
                   "storage", spec.id)


def _kept(spec: AgentSpec, af: AgentFile, reasoning: dict[str, str], parts: dict[str, list[str]]) -> dict[str, Any]:
    """What vmem keeps as data for an agent (msgpack-serialisable), and gives back on export."""
    return {
        "format": _KEPT_FORMAT,
        "source": af.report.source,
        "agent": {"id": spec.id, "name": spec.name, "agent_type": spec.agent_type, "model": spec.model,
                  "description": spec.description, "settings": _plain(spec.letta)},
        "tools": [{"name": t.name, "tool_type": t.tool_type, "description": t.description,
                   "json_schema": _plain(t.json_schema), "source_code": t.source_code,
                   "source_type": t.source_type, "id": t.id, "letta": _plain(t.letta)} for t in spec.tools],
        "tool_rules": [{"type": r.type, "tool_name": r.tool_name, "params": _plain(r.params)}
                       for r in spec.tool_rules],
        "blocks": {b.label: {"id": b.id, "limit": b.limit, "letta": _plain(b.letta)} for b in spec.blocks},
        "reasoning": reasoning,
        "parts": parts,
        "originals": _plain(spec.originals),
        "groups": [{"id": g.id, "agent_ids": list(g.agent_ids), "manager_type": g.manager_type,
                    "manager_agent_id": g.manager_agent_id, "description": g.description,
                    "shared_block_ids": list(g.shared_block_ids), "config": _plain(g.config)}
                   for g in af.groups if spec.id in g.agent_ids or spec.id == g.manager_agent_id],
        "file": {"created_at": af.created_at.isoformat() if af.created_at else None,
                 "metadata": _plain(af.metadata)},
    }


def _plain(value: Any) -> Any:
    """Read-only JSON (the format layer's mappings and tuples) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _report_kept(spec: AgentSpec, report: ImportReport) -> None:
    code = [t.name for t in spec.tools if t.source_code and t.builtin is None]
    if code:
        report.add("note", "tool code", f"{', '.join(code)}: source code stored as data and never run (vmem has "
                   "no sandbox for imported code, and no option turns running it on)", spec.id)
    unmapped = [t.name for t in spec.tools if t.builtin is None]
    if unmapped:
        report.add("note", "tools not offered", f"{', '.join(unmapped)}: kept as data only; vmem cannot run them, so "
                   "the model is not offered them", spec.id)


def kept_data(memory: Memory) -> dict[str, Any] | None:
    """What an import kept as data for this memory (see the module docstring), or None."""
    try:
        data = memory.store.state[KEPT_KEY]
    except _StoreNotFound:
        return None
    return data if isinstance(data, dict) and data.get("format") == _KEPT_FORMAT else None


# ================================================================ export


def export_agent_file(source: str | os.PathLike[str], target: str | os.PathLike[str] | None = None) -> ExportResult:
    """The vmem agent in directory ``source`` (or every agent in its subdirectories, as an
    import of a multi-agent file made them) as a Letta agent file, written atomically to
    ``target`` when given. Opens each memory read-only: it works beside a running agent.
    Archival passages go in the ``x_vmem`` extension; blocks two agents share in the file
    they came from are one block again while their copies agree."""
    dirs: list[Any]
    if is_url(source):
        if not Memory.exists(source):
            raise LettaBridgeError(f"{display(source)} holds no vmem agent")
        dirs = [_Named(str(source))]
    elif not Path(source).is_dir():
        raise LettaBridgeError(f"{source} is not a directory")
    elif Memory.exists(Path(source)):
        dirs = [Path(source)]
    else:
        dirs = sorted(d for d in Path(source).iterdir() if d.is_dir() and Memory.exists(d))
        if not dirs:
            raise LettaBridgeError(f"{source} holds no vmem agent (nor do its subdirectories)")
    notes: list[str] = []
    specs: list[AgentSpec] = []
    kept_all: list[dict[str, Any] | None] = []
    for d in dirs:
        memory = Memory.open(str(d) if isinstance(d, _Named) else d, read_only=True)
        try:
            kept = kept_data(memory)
            specs.append(_agent_spec(memory, kept, d.name))
            kept_all.append(kept)
        finally:
            memory.close()
    order = sorted(range(len(specs)), key=lambda i: _file_order(specs[i].id, dirs[i].name))
    specs, kept_all = [specs[i] for i in order], [kept_all[i] for i in order]
    specs = _unique_ids(specs, notes)
    specs = _share_blocks(specs, notes)
    groups = _groups(specs, kept_all, notes)
    created = max((m.timestamp for s in specs for m in (*s.out_of_context, *s.in_context)), default=None)
    meta: Mapping[str, Any] = next((k["file"]["metadata"] for k in kept_all if k and isinstance(k["file"].get("metadata"), dict)), {})
    af = AgentFile(tuple(specs), tuple(groups), created_at=created, metadata=meta)
    if target is not None:
        dump_agent_file(af, target)
    return ExportResult(af, notes)


def _file_order(aid: str, dirname: str) -> tuple[int, int, str]:
    """Agents in the order of the file they came from (agent-0, agent-1, ...), then by directory."""
    m = re.fullmatch(r"agent-(\d+)", aid)
    return (0, int(m.group(1)), dirname) if m else (1, 0, dirname)


def _all_message_ids(memory: Memory) -> list[int]:
    last = memory.store.recall.last_id()
    if last is None:
        return []
    return [make_page_id(PageKind.MESSAGE, i) for i in range(1, page_serial(last) + 1)]


def _chat(m: Message, reasoning: Mapping[str, str], parts: Mapping[str, list[str]]) -> ChatMessage:
    calls = tuple(ToolCall(c["id"], c["function"]["name"], c["function"]["arguments"])
                  for c in m.meta.get("tool_calls") or ())
    return ChatMessage(role=cast(Role, m.role), content=m.content, timestamp=m.timestamp.astimezone(_UTC), tool_calls=calls,
                       tool_call_id=m.meta.get("tool_call_id"), name=m.meta.get("name"),
                       reasoning=reasoning.get(str(m.id), ""), parts=tuple(parts.get(str(m.id)) or ()))


def _agent_spec(memory: Memory, kept: dict[str, Any] | None, dirname: str) -> AgentSpec:
    reasoning = (kept or {}).get("reasoning") or {}
    parts = (kept or {}).get("parts") or {}
    ids = _all_message_ids(memory)
    messages = memory.store.recall.get_many(ids)
    queued = set(memory.queue.pages())
    in_context = [_chat(m, reasoning, parts) for m in memory.store.recall.get_many(memory.queue.pages())]
    out_of_context = [_chat(m, reasoning, parts) for m in messages if m.id not in queued]
    kept_blocks = (kept or {}).get("blocks") or {}
    blocks = []
    for b in memory.blocks():
        k = kept_blocks.get(b.label) or {}
        blocks.append(BlockSpec(b.label, b.value, b.limit, b.description, b.read_only, id=k.get("id") or "",
                                letta=k.get("letta") or {}))
    if kept is not None:
        tools = [ToolSpec(t["name"], t["tool_type"], t["description"], t["json_schema"], t["source_code"],
                          t["source_type"], t["id"], t["letta"] or {}) for t in kept["tools"]]
        rules = [ToolRule(r["type"], r["tool_name"], r["params"] or {}) for r in kept["tool_rules"]]
        info = kept["agent"]
        name, agent_type, model, description, aid = (info["name"], info["agent_type"], info["model"],
                                                     info["description"], info["id"])
        settings = info["settings"] or {}
    else:
        tools = [builtin_tool(f.name, f.schema) for f in memory.functions.values()]
        rules, settings = [], {}
        name, agent_type, model, description, aid = dirname, "memgpt_agent", None, "", ""
    passages: list[ArchivalPassage] = []
    page = 0
    while True:
        found = memory.store.archival.search(None, page=page, page_size=500)
        passages.extend(ArchivalPassage(p.text, tuple(p.tags), p.timestamp.astimezone(_UTC)) for p in found.items)
        if not found.has_next:
            break
        page += 1
    passages.sort(key=lambda p: (p.timestamp, p.text))
    return AgentSpec(name=name, system=memory.system, blocks=tuple(blocks), tools=tuple(tools),
                     tool_rules=tuple(rules), in_context=tuple(in_context), out_of_context=tuple(out_of_context),
                     summary=memory.summary, passages=tuple(passages), context_window=memory.config.window,
                     model=model, agent_type=agent_type, description=description or "", id=aid, letta=settings,
                     memory={"config": memory.config.to_dict(), "instructions": memory.instructions},
                     originals=(kept or {}).get("originals") or {})


def _unique_ids(specs: list[AgentSpec], notes: list[str]) -> list[AgentSpec]:
    """Agents keep their file-local ids when unique (the writer assigns the others)."""
    seen: set[str] = set()
    out = []
    for s in specs:
        if s.id and s.id in seen:
            notes.append(f"agent {s.name}: its id {s.id} is another exported agent's; given a new one")
            s = replace(s, id="")
        seen.add(s.id)
        out.append(s)
    return out


def _share_blocks(specs: list[AgentSpec], notes: list[str]) -> list[AgentSpec]:
    """Blocks with the same Letta id in several agents: one block while the copies agree."""
    by_id: dict[str, list[BlockSpec]] = {}
    for s in specs:
        for b in s.blocks:
            if b.id:
                by_id.setdefault(b.id, []).append(b)
    keep: dict[str, BlockSpec] = {}
    split: set[str] = set()
    for bid, copies in by_id.items():
        first = copies[0]
        same = all((b.label, b.value, b.limit, b.description, b.read_only) ==
                   (first.label, first.value, first.limit, first.description, first.read_only) for b in copies)
        if same:
            keep[bid] = first
        else:
            split.add(bid)
            notes.append(f"block {first.label}: one block shared by {len(copies)} agents in the file it came from; "
                         "the copies differ now, so each agent gets its own")
    out = []
    for s in specs:
        blocks = tuple(keep.get(b.id, b) if b.id not in split else replace(b, id="") for b in s.blocks)
        out.append(replace(s, blocks=blocks))
    return out


def _groups(specs: list[AgentSpec], kept_all: list[dict[str, Any] | None], notes: list[str]) -> list[GroupSpec]:
    ids = {s.id for s in specs if s.id}
    blocks = {b.id for s in specs for b in s.blocks if b.id}
    seen: set[str] = set()
    out = []
    for kept in kept_all:
        for g in (kept or {}).get("groups") or ():
            if g["id"] in seen:
                continue
            seen.add(g["id"])
            members = set(g["agent_ids"]) | ({g["manager_agent_id"]} if g["manager_agent_id"] else set())
            if not members <= ids:
                notes.append(f"group {g['id']} ({g['manager_type']}): left out, its agents "
                             f"{', '.join(sorted(members - ids))} are not exported with it")
                continue
            out.append(GroupSpec(g["id"], tuple(g["agent_ids"]), g["manager_type"], g["manager_agent_id"],
                                 g["description"] or "", tuple(b for b in g["shared_block_ids"] if b in blocks),
                                 g["config"] or {}))
    return out


class _Named(str):
    """A PostgreSQL location where the export names agents by their directory: the agent's name."""

    @property
    def name(self) -> str:
        from vmem.storage.postgres_connect import PgLocation

        return PgLocation.parse(str(self)).agent
