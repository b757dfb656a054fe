"""The fields of Letta's agent file that vmem knows: mapped, passed through, or Letta's own
bookkeeping. A field in none of these lists is reported as unknown (the format evolves).

Interface::

    from vmem.app.agentfile.fields import _AGENT_FIELDS, _MESSAGE_FIELDS, _ROLES, _ID_RE
"""

from __future__ import annotations

import re

from vmem.app.agentfile.model import EXTENSION_KEY

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
