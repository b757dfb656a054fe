"""Appending a line a core memory block already holds appends nothing and says so. Qwen2.5-Coder-1.5B,
asked "What is my bike lock code?" through the Agents SDK example, appended "My bike lock code is
4812." a second time (core memory is small; small models re-save what they read there)."""

from __future__ import annotations

import json
from pathlib import Path

from vmem.kernel import Memory


def call(memory: Memory, n: int, name: str, **args: object) -> str:
    c = {"id": f"c{n}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
    memory.append({"role": "assistant", "content": None, "tool_calls": [c]})
    record = memory.execute(c)
    assert record.ok, record.result
    return str(json.loads(record.result)["message"])


def test_a_line_the_block_holds_is_not_appended_again(tmp_path: Path) -> None:
    with Memory.create(tmp_path / "m", system="s", blocks={"human": "Name: Ana"}) as memory:
        memory.append({"role": "user", "content": "remember my bike lock code: 4812"})
        assert call(memory, 1, "core_memory_append", label="human",
                    content="My bike lock code is 4812.") == "block 'human' now holds 36/2000 characters"
        again = call(memory, 2, "core_memory_append", label="human", content="  My bike lock code is 4812.\n")
        assert again == ("block 'human' already holds this, nothing appended: My bike lock code is 4812.")
        assert memory.block("human").value == "Name: Ana\nMy bike lock code is 4812."
        # a new line beside a known one is appended whole
        call(memory, 3, "core_memory_append", label="human", content="My bike lock code is 4812.\nI live in Porto.")
        assert memory.block("human").value.count("4812") == 2
        memory.check()
