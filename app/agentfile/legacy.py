"""Legacy forms: the single-agent layout of Letta 0.6/0.7, rewritten in today's layout.

Interface::

    from vmem.app.agentfile.legacy import from_legacy
    doc = from_legacy(reader, doc)   # reader: the _Reader reading the file
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vmem.app.agentfile.fields import _LEGACY_FIELDS
from vmem.app.agentfile.model import BrokenReference

if TYPE_CHECKING:
    from vmem.app.agentfile.reading import _Reader


def from_legacy(reader: _Reader, doc: dict[str, Any]) -> dict[str, Any]:
    """The single-agent layout of Letta 0.6/0.7 (blocks and tools inline, context by index)
    rewritten in today's layout."""
    reader.fields(doc, _LEGACY_FIELDS, "the top level")
    reader.legacy = True
    version = doc.get("version")
    reader.report.add("note", "legacy layout", f"a single-agent file of Letta {version or '0.6/0.7'}; read in "
                    "today's layout")
    blocks = []
    for i, b in enumerate(reader.get(doc, "core_memory", list, "", [])):
        if not isinstance(b, dict):
            reader.fail(f"core_memory[{i}]", "must be an object")
        block = {**b, "id": f"block-{i}"}
        if "metadata" not in block and isinstance(block.get("metadata_"), dict):
            block["metadata"] = block.pop("metadata_")
        blocks.append(block)
    tools = []
    for i, t in enumerate(reader.get(doc, "tools", list, "", [])):
        if not isinstance(t, dict):
            reader.fail(f"tools[{i}]", "must be an object")
        tools.append({**t, "id": f"tool-{i}"})
    messages = []
    for i, m in enumerate(reader.get(doc, "messages", list, "", [])):
        if not isinstance(m, dict):
            reader.fail(f"messages[{i}]", "must be an object")
        messages.append({**m, "id": f"message-{i}"})
    ctx = []
    for k in reader.get(doc, "in_context_message_indices", list, "", []):
        if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k < len(messages):
            reader.fail("in_context_message_indices", f"{k!r} is not the index of a message", BrokenReference)
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
        reader.report.add("skipped", "multi_agent_group", "a Letta 0.6 group: not imported")
    return {"agents": [agent], "blocks": blocks, "tools": tools, "created_at": doc.get("created_at")}
