"""Memory.append(timestamp=) and Memory.import_history(): history brought from elsewhere."""

from __future__ import annotations

import datetime as dt

import pytest

from vmem import PageKind, make_page_id

from vmem.kernel import ContextWindowError, KernelError, Memory, MemoryConfig, MessageError

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 1, 9, 0, tzinfo=UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def new_memory(path, window: int = 4096) -> Memory:
    return Memory.create(path, system="You are a test agent.", blocks={"human": ""},
                         config=MemoryConfig(window=window, reserve_output=min(1024, window // 4)), clock=lambda: dt.datetime(2030, 1, 1, tzinfo=UTC))


CALL = {"role": "assistant", "content": None,
        "tool_calls": [{"id": "c1", "type": "function",
                        "function": {"name": "core_memory_append", "arguments": '{"label": "human", "content": "x"}'}}]}
RESULT = {"role": "tool", "tool_call_id": "c1", "content": '{"status": "OK", "message": "done"}'}


def test_append_keeps_the_given_timestamps_for_every_role(tmp_path):
    with new_memory(tmp_path / "m") as memory:
        memory.append({"role": "user", "content": "hi"}, timestamp=at(0))
        memory.append(CALL, timestamp=at(1))
        memory.append(RESULT, timestamp=at(2))
        memory.append({"role": "assistant", "content": "hello"}, timestamp=at(3))
        memory.check()
        stored = memory.store.recall.get_many(memory.queue.pages())
        assert [m.timestamp for m in stored] == [at(0), at(1), at(2), at(3)]
        assert memory.now == at(3)
        memory.append({"role": "user", "content": "later"})  # no timestamp: the clock again
        assert memory.now.year == 2030


def test_append_refuses_a_naive_timestamp_and_changes_nothing(tmp_path):
    with new_memory(tmp_path / "m") as memory:
        with pytest.raises(MessageError, match="timezone-aware"):
            memory.append({"role": "user", "content": "hi"}, timestamp=dt.datetime(2024, 1, 1))
        assert len(memory.store.recall) == 0


def test_import_history_stores_evicted_messages_behind_the_summary(tmp_path):
    path = tmp_path / "m"
    with new_memory(path) as memory:
        pages = memory.import_history([({"role": "user", "content": "my cat is Pixel"}, at(0)), (CALL, at(1)),
                                       (RESULT, at(2))], summary="The user has a cat called Pixel.")
        memory.append({"role": "user", "content": "hello again"}, timestamp=at(10))
        memory.check()
        assert len(pages) == 3 and memory.evicted == 3 and memory.summary == "The user has a cat called Pixel."
        assert [m["content"] for m in memory.queue.messages] == ["hello again"]  # history is not queued
        assert "Pixel" in memory.compile()[3]["content"]  # the summary is in the context (after system, instructions, core)
        found = memory.conversation_search("Pixel")
        assert found.total == 1 and found.items[0].timestamp == at(0)
        digest = memory.digest()
    with Memory.open(path) as memory:
        memory.check()
        assert memory.digest() == digest


def test_import_history_without_summary_is_stored_only(tmp_path):
    with new_memory(tmp_path / "m") as memory:
        memory.import_history([({"role": "user", "content": "old"}, at(0))])
        memory.check()
        assert memory.evicted == 0 and memory.summary == "" and memory.state.stored_only == 1


@pytest.mark.parametrize("history, summary, error", [
    ([(CALL, at(0))], "s", "have no result"),                              # a call with no result
    ([(RESULT, at(0))], "s", "without a pending tool call"),               # a result with no call
    ([], "a summary of nothing", "needs the messages"),
    ([({"role": "user", "content": "x"}, dt.datetime(2024, 1, 1))], "", "timezone-aware"),
])
def test_import_history_refuses_bad_history_and_changes_nothing(tmp_path, history, summary, error):
    with new_memory(tmp_path / "m") as memory:
        digest = memory.digest()
        with pytest.raises(KernelError, match=error):
            memory.import_history(history, summary=summary)
        assert memory.digest() == digest
        memory.check()


def test_import_history_comes_before_any_message(tmp_path):
    with new_memory(tmp_path / "m") as memory:
        memory.append({"role": "user", "content": "hi"})
        with pytest.raises(KernelError, match="holds messages already"):
            memory.import_history([({"role": "user", "content": "old"}, at(0))], summary="s")


def test_an_imported_summary_over_its_cap_is_kept_whole_in_recall_and_cut(tmp_path):
    # before issue 18 a summary that fit the budget but left no room wedged every later step
    with new_memory(tmp_path / "m", window=4608) as memory:
        long = "the summary goes on " * 600
        memory.import_history([({"role": "user", "content": "old"}, at(0))], summary=long)
        memory.check()
        assert memory.pressure.summary_tokens() <= memory.pressure.summary_cap
        whole = [m for m in memory.store.recall.get_many(
            [make_page_id(PageKind.MESSAGE, i) for i in range(1, len(memory.store.recall) + 1)])
            if m.meta.get("kind") == "imported_summary"]
        assert len(whole) == 1 and long in whole[0].content and f"{whole[0].id:#x}" in memory.summary