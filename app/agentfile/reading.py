"""Reading: a Letta agent file checked whole and mapped to the model, or one clear error.

Interface::

    from vmem.app.agentfile.reading import read_agent_file
    af = read_agent_file("evie.af")   # AgentFile, or AgentFileError (one line)
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from vmem.app.agentfile.envelopes import (
    _envelope,
    _summary_body,
    _summary_envelope,
)
from vmem.app.agentfile.fields import (
    _AGENT_FIELDS,
    _AGENT_NOT_PASSED,
    _BLOCK_FIELDS,
    _BLOCK_PASSED,
    _GROUP_FIELDS,
    _IGNORED,
    _MESSAGE_FIELDS,
    _ROLES,
    _TOOL_FIELDS,
    _TOOL_PASSED,
    _TOOL_RETURN_FIELDS,
    _TOP_FIELDS,
)
from vmem.app.agentfile.legacy import from_legacy
from vmem.app.agentfile.model import (
    _EPOCH,
    _LETTA_TO_VMEM,
    DEFAULT_BLOCK_LIMIT,
    BYTES_PER_CONTAINER,
    DEFAULT_MAX_BYTES,
    EXTENSION_KEY,
    EXTENSION_VERSION,
    UTC,
    AgentFile,
    AgentFileError,
    AgentFileTooLarge,
    AgentSpec,
    ArchivalPassage,
    BlockSpec,
    BrokenReference,
    ChatMessage,
    GroupSpec,
    ImportReport,
    NotAnAgentFile,
    ToolCall,
    ToolRule,
    ToolSpec,
    _freeze,
)
from vmem.app.agentfile.pairing import Item, pair_results
from vmem.app.agentfile.reporting import report_agent, report_file, report_unknown


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
        self._dense(text)
        doc = self._json(text, "not JSON")
        if isinstance(doc, str):
            self._dense(doc)
            doc = self._json(doc, "a JSON string that does not hold JSON")
            if isinstance(doc, str):
                self.fail("", "JSON encoded more than twice: not an agent file", NotAnAgentFile)
            self.report.add("note", "double-encoded JSON",
                            "the file is a JSON string holding the document; decoded it")
        if not isinstance(doc, dict):
            self.fail("", f"expected a JSON object with 'agents', got {_JSON_NAMES.get(type(doc), 'a value')}",
                      NotAnAgentFile)
        return doc

    def _dense(self, text: str) -> None:
        """Refuse, before parsing, a text with more JSON objects and arrays than an agent file has:
        parsed, each costs ~60-100 bytes of memory, so a file of ``{}`` (one per 3 bytes) would take
        30 times its size. Allowed: one per :data:`BYTES_PER_CONTAINER` bytes on average (real files
        have one per few hundred), so reading stays proportional to the file."""
        containers = text.count("{") + text.count("[")  # brackets in strings count too: an upper bound
        allowed = max(10_000, len(text) // BYTES_PER_CONTAINER)
        if containers > allowed:
            self.fail("", f"{containers} JSON objects and arrays in {len(text)} characters (at most {allowed}, one per "
                      f"{BYTES_PER_CONTAINER} on average): not an agent file (reading it would take memory out of "
                      "proportion to its size)", AgentFileTooLarge)

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
            doc = from_legacy(self, doc)
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
        report_file(self, doc, blocks, tools, shared, tool_lists)

        metadata = self.get(doc, "metadata", dict, "", {})
        created = self.time(doc.get("created_at"))
        report_unknown(self)
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
        report_agent(self, spec, raw)
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

        ctx_items: list[Item] = []
        for pos, j in enumerate(order):
            ctx_items += self._items(msgs[j], times[j], True, pos == 0, system, aid, f"{where}.messages[{j}]", stats)
        old_items: list[Item] = []
        for j, m in enumerate(msgs):
            if j not in in_set:
                old_items += self._items(m, times[j], False, False, system, aid, f"{where}.messages[{j}]", stats)

        originals: dict[str, Any] = {}
        if order and msgs[order[0]].get("role") == "system" and isinstance(msgs[order[0]].get("created_at"), str):
            originals["system"] = {"created_at": msgs[order[0]]["created_at"]}
        summary = ""
        if ctx_items and ctx_items[0].msg.kind == "summary":
            env = _envelope(ctx_items[0].msg.content)
            body = _summary_body(env) if env is not None else None
            summary = body if body is not None else ctx_items[0].msg.content  # else: role summary, plain text
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
        in_ctx, out_ctx = pair_results(self.report, ctx_items, old_items, aid, stats)
        stats["in_context"] = len(in_ctx)
        stats["out_of_context"] = len(out_ctx)
        return summary, in_ctx, out_ctx, originals

    def _items(self, m: Mapping[str, Any], t: _dt.datetime, ctx: bool, first: bool, system: str, aid: str,
               where: str, stats: dict[str, int]) -> list[Item]:
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
            return [Item(ChatMessage("system", flat.text, name=name, **base), ctx)]
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
            return [Item(ChatMessage("user", text, name=name, **base), ctx)]
        if role in ("assistant", "approval"):
            calls = self._calls(m, flat, where, aid, stats)
            if role == "approval" and not calls:
                return self._approval_answer(m, t, ctx, where, aid, stats)
            if role == "approval":
                stats["approval_requests"] = stats.get("approval_requests", 0) + 1
            return [Item(ChatMessage("assistant", flat.text, tool_calls=tuple(calls), name=name,
                                      reasoning=flat.reasoning, **base), ctx, approval=role == "approval")]
        # tool / function: one result per return
        returns = self._returns(m, flat, where)
        if not returns:
            self.report.add("warning", f"message {mid}", "a tool message with no tool_call_id: not imported", aid)
            return []
        out = []
        for tcid, text in returns:
            out.append(Item(ChatMessage("tool", text, tool_call_id=tcid, name=name, **base), ctx, result_for=tcid))
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
                         stats: dict[str, int]) -> list[Item]:
        """A human's answer to an approval request: not a chat message; tool returns in it are results."""
        items = []
        for a in self.get(m, "approvals", list, where, []):
            if isinstance(a, dict) and isinstance(a.get("tool_call_id"), str) and (
                    "func_response" in a or "status" in a and "approve" not in a):
                text = _result_text(a.get("func_response")) or ""
                items.append(Item(ChatMessage("tool", text, t, tool_call_id=a["tool_call_id"], letta_id=m["id"]),
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

@dataclass
class _Flat:
    """A content list flattened: the text, the reasoning, what was dropped, calls and results in parts."""

    text: str = ""
    reasoning: str = ""
    dropped: list[str] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)
    returns: list[tuple[str, str]] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)  # the text parts, when there are several


_JSON_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string", int: "an integer",
                                float: "a number", bool: "true/false", type(None): "null"}


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
