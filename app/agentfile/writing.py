"""Writing: the model as a document Letta's ``AgentFileSchema`` accepts, and to a file atomically.

Interface::

    from vmem.app.agentfile.writing import write_agent_file, dump_agent_file
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from vmem.app.agentfile.envelopes import (
    _envelope,
    _letta_time,
    _summary_envelope,
)
from vmem.app.agentfile.fields import (
    _BLOCK_PASSED,
    _ID_RE,
    _TOOL_PASSED,
)
from vmem.app.agentfile.model import (
    _EPOCH,
    DEFAULT_CONTEXT_WINDOW,
    EXTENSION_KEY,
    EXTENSION_VERSION,
    AgentFile,
    AgentSpec,
    BlockSpec,
    ChatMessage,
    ToolSpec,
    _thaw,
    _unique,
)


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


def _write_messages(a: AgentSpec, aid: str, ids: _Ids, kept: set[str], af: AgentFile
                    ) -> tuple[list[dict[str, Any]], list[str]]:
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
    system: dict[str, Any] = {"type": "message", "id": mid(None), "role": "system", "content": [_text(a.system)],
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
