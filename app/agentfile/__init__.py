"""Letta Agent File (.af) import and export: the format layer, with no kernel.

Interface::

    from vmem.app.agentfile import read_agent_file, write_agent_file, dump_agent_file
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
tool's source is a string, kept as data. Standard library only.

The package, one concept per module: ``model`` (the dataclasses, errors, report and tool
tables), ``fields`` (the fields vmem knows), ``envelopes`` (Letta's JSON inside message
text), ``reading`` (checks and mapping), ``pairing`` (the tool-call pairing rule),
``legacy`` (Letta 0.6/0.7's layout), ``reporting`` (what an import did), ``writing``.
Import from the package: the names below are its public surface.

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

from vmem.app.agentfile.model import (
    DEFAULT_CONTEXT_WINDOW,
    DEFAULT_MAX_BYTES,
    EXTENSION_KEY,
    VMEM_BUILTINS,
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
    ReportEntry,
    ToolCall,
    ToolMapping,
    ToolRule,
    ToolSpec,
    builtin_tool,
)
from vmem.app.agentfile.reading import (
    read_agent_file,
)
from vmem.app.agentfile.writing import (
    dump_agent_file,
    write_agent_file,
)

__all__ = [
    "DEFAULT_CONTEXT_WINDOW",
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
