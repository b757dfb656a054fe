"""What an import did, in the report: per agent (blocks, tools, messages, what was kept as
data or skipped) and per file (unused blocks and tools, unsupported parts, unknown fields).

Interface::

    from vmem.app.agentfile.reporting import report_agent, report_file, report_unknown
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from vmem.app.agentfile.model import (
    _SERVER_TOOLS,
    VMEM_BUILTINS,
    AgentSpec,
)

if TYPE_CHECKING:
    from vmem.app.agentfile.reading import _Reader


def report_agent(reader: _Reader, spec: AgentSpec, raw: Mapping[str, Any]) -> None:
    aid = spec.id
    st = reader.report.stats.setdefault(aid, {})
    add = reader.report.add
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

def report_file(reader: _Reader, doc: Mapping[str, Any], blocks: Mapping[str, Any], tools: Mapping[str, Any],
                 shared: Mapping[str, list[str]], tool_lists: Mapping[str, list[str]]) -> None:
    used_tools = {t for ids in tool_lists.values() for t in ids}
    for bid, raw in blocks.items():
        if bid not in shared:
            reader.report.add("skipped", f"block {raw.get('label')} ({bid})", "no agent of the file uses it")
    for tid, raw in tools.items():
        if tid not in used_tools:
            reader.report.add("skipped", f"tool {raw.get('name')} ({tid})", "no agent of the file uses it")
    for key, why in (("files", "file contents need Letta's file system"), ("sources", "data sources"),
                     ("mcp_servers", "MCP server connections"), ("skills", "Letta Code skills")):
        items = doc.get(key) or []
        if items:
            names = [str(i.get("name") or i.get("file_name") or i.get("server_name") or i.get("id"))
                     for i in items if isinstance(i, dict)]
            shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
            reader.report.add("skipped", key, f"{len(items)} ({shown}): {why}, not imported")
    if reader.naive_times:
        reader.report.add("note", "timestamps", f"{reader.naive_times} without a time zone taken as UTC")
    if reader.bad_times:
        reader.report.add("warning", "timestamps", f"{reader.bad_times} unreadable created_at value(s) replaced")

def report_unknown(reader: _Reader) -> None:
    def listed(keys: Mapping[str, int]) -> str:
        return ", ".join(f"{k} (x{n})" if n > 1 else k for k, n in sorted(keys.items()))

    for entity, keys in reader.unknown.items():
        reader.report.add("warning", f"unknown fields in {entity}", f"{listed(keys)}: ignored (the format evolves)")
    if reader.ignored:
        parts = "; ".join(f"{entity}: {listed(keys)}" for entity, keys in reader.ignored.items())
        reader.report.add("skipped", "Letta bookkeeping", f"{parts}: the Letta server's own ids and housekeeping, "
                        "not imported")


def _env_names(value: Any) -> list[str]:
    if isinstance(value, dict):
        return sorted(map(str, value))
    if isinstance(value, list):
        return sorted(str(e.get("key")) for e in value if isinstance(e, dict) and e.get("key"))
    return []
