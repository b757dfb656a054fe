"""A duplicate archival insert says the passage was already there (issue 19, item 12): it
answered "saved as 1 passage(s)" as if it were new."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vmem.kernel import Memory


def insert(memory: Memory, n: int, **args: object) -> str:
    call = {"id": f"c{n}", "type": "function", "function": {"name": "archival_memory_insert",
                                                            "arguments": json.dumps(args)}}
    memory.append({"role": "assistant", "content": None, "tool_calls": [call]})
    record = memory.execute(call)
    assert record.ok, record.result
    return json.loads(record.result)["message"]


@pytest.mark.parametrize("backend", [None, pytest.param("milvus", marks=pytest.mark.milvus)])
def test_a_duplicate_insert_is_said_to_be_there_already(tmp_path: Path, backend: str | None) -> None:
    if backend == "milvus":
        pytest.importorskip("pymilvus")
    with Memory.create(tmp_path / "m", system="s", archival=backend) as memory:
        memory.append({"role": "user", "content": "remember my bike lock code"})
        first = insert(memory, 1, content="Bike lock code: 4812.")
        assert first.startswith("saved as 1 passage(s): ")
        page = first.rsplit(" ", 1)[1]
        assert insert(memory, 2, content="Bike lock code: 4812.") == (
            f"already in archival memory, nothing new saved: passage(s) {page}")
        assert insert(memory, 3, content="Bike lock code: 4812.", tags=["codes"]).endswith("(tags added)")
        assert len(memory.store.archival) == 1
        assert memory.archival_search("bike lock").items[0].tags == ("codes",)
        memory.check()
