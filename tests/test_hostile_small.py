"""The smaller hostile inputs of issue 18 (item 12): each gets a clear error or is stored as
messages are (a lone surrogate becomes U+FFFD), never a raw UnicodeEncodeError, OverflowError,
numpy error or IsADirectoryError; and the store's lock cannot be side-stepped by deleting its file.
"""

from __future__ import annotations

import os

import pytest

from vmem.kernel import Agent, Memory
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall
from vmem.storage import ForeignFileError, StoreLockedError


@pytest.fixture
def memory(tmp_path):
    m = Memory.create(tmp_path / "m", system="s", blocks={"human": ""})
    m.append({"role": "user", "content": "hello there"})
    yield m
    m.check()
    m.close()


def test_a_lone_surrogate_in_a_block_is_stored_as_in_a_message(memory):
    assert memory.set_block("human", "a\ud800b").value == "a\ufffdb"
    assert memory.add_block("l\udc00", "v\ud800", description="d\udfff").label == "l\ufffd"
    assert memory.update_block("human", value="\ud800").value == "\ufffd"
    assert memory.block("l\ufffd").value == "v\ufffd"


@pytest.mark.parametrize("limit", [10**30, 2**63, -1, 0])
def test_a_block_limit_out_of_range_is_a_clear_error(memory, limit):
    with pytest.raises(ValueError, match="block limit must be an int in"):
        memory.add_block("x", "v", limit=limit)
    with pytest.raises(ValueError, match="block limit must be an int in"):
        memory.update_block("human", limit=limit)


@pytest.mark.parametrize("page", [10**30, 2**62, 2**31])
def test_a_far_page_is_a_clear_error(memory, page):
    for search in (lambda: memory.conversation_search("hello", page=page),
                   lambda: memory.conversation_search(None, page=page),
                   lambda: memory.archival_search("hello", page=page)):
        with pytest.raises(ValueError, match="page must be an int in"):
            search()


def test_the_last_page_allowed_is_empty_not_an_error(memory):
    page = 2**31 - 1
    assert memory.conversation_search("hello", page=page).items == []
    assert memory.conversation_search(None, page=page).items == []
    assert memory.archival_search("hello", page=page).items == []


def test_a_far_page_from_the_model_is_a_function_error(tmp_path):
    calls = [ToolCall("c1", "conversation_search", {"query": "hello", "page": 10**30})]

    def answer(messages, tools):
        if calls:
            return Completion(tool_calls=[calls.pop()])
        return Completion(text="done")
    agent = Agent.create(tmp_path / "a", system="s", driver=ScriptedDriver(answer))
    result = agent.step("hello")
    assert not result.calls[0].ok and "page" in result.calls[0].result
    agent.close()


def test_a_lock_path_that_is_a_directory_is_a_clear_error(tmp_path):
    Memory.create(tmp_path / "m", system="s").close()
    os.remove(tmp_path / "m" / "lock")
    os.mkdir(tmp_path / "m" / "lock")
    with pytest.raises(ForeignFileError, match="not a lock file"):
        Memory.open(tmp_path / "m")


def test_deleting_the_lock_file_does_not_let_a_second_writer_in(tmp_path):
    first = Memory.create(tmp_path / "m", system="s")
    os.remove(tmp_path / "m" / "lock")
    with pytest.raises(StoreLockedError):
        Memory.open(tmp_path / "m")
    first.close()
    Memory.open(tmp_path / "m").close()
