"""Facts with a time in the kernel: Memory.archival_insert(valid_from=), Memory.supersede (traced,
atomic, in the digest, the working set's lines rewritten), archival_search(as_of=), and the
memory function the model calls to replace a fact."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from vmem.kernel import Memory, read_trace
from vmem.kernel.context import passage_line
from vmem.storage import NotFoundError, Passage

UTC = dt.timezone.utc
T0 = dt.datetime(2023, 5, 1, 9, 0, tzinfo=UTC)


class Clock:
    """A settable clock for the memory."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def memory(place, clock: Clock) -> Iterator[Memory]:
    m = Memory.create(place("a"), system="You are a test agent.", blocks={"human": ""}, clock=clock)
    yield m
    m.close()


def turn(memory: Memory, clock: Clock, days: float, text: str = "hello") -> None:
    clock.now = T0 + dt.timedelta(days=days)
    memory.append({"role": "user", "content": text})


def test_insert_holds_from_the_conversations_time(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 3)
    [a] = memory.archival_insert("Ana makes 60 calls a day.")
    [b] = memory.archival_insert("Ana started at Acme.", valid_from=T0)
    [[c], [d]] = memory.archival_insert_many(["x1", "x2"], valid_from=[T0, T0 + dt.timedelta(days=1)])
    got = {p.id: p.valid_from for p in memory.store.archival.get_many([a, b, c, d])}
    assert got == {a: clock.now, b: T0, c: T0, d: T0 + dt.timedelta(days=1)}
    memory.check()


def test_supersede_is_traced_in_the_digest_and_survives_reopen(place, clock: Clock) -> None:
    memory = Memory.create(place("a"), system="s", blocks={}, clock=clock)
    turn(memory, clock, 0)
    [old] = memory.archival_insert("Ana makes 60 calls a day.")
    turn(memory, clock, 60)
    [new] = memory.archival_insert("Ana makes 1,200 calls a day.")
    before = memory.digest()
    assert memory.supersede([old], new) == [old]
    after = memory.digest()
    assert after != before  # the digest covers the interval
    p = memory.store.archival.get(old)
    assert (p.invalid_at, p.superseded_by) == (clock.now, new)
    [event] = [e for e in read_trace(memory.store) if e["e"] == "supersede"]
    assert event == {"e": "supersede", "old": [old], "by": new, "at": clock.now.timestamp(), "changed": [old]}
    assert memory.supersede([old], new) == []  # nothing left to change: still traced, digest unchanged
    assert memory.digest() == after
    memory.check()
    memory.close()
    again = Memory.open(place("a"), clock=clock)
    assert again.digest() == after
    again.check()
    again.close()


def test_a_refused_supersede_changes_nothing(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 5)
    [a] = memory.archival_insert("fact a")
    [b] = memory.archival_insert("fact b")
    before = memory.digest()
    events = len(list(read_trace(memory.store)))
    with pytest.raises(NotFoundError):
        memory.supersede([a, a + 1000], b)
    with pytest.raises(ValueError):
        memory.supersede([a], b, at=T0)  # before a began to hold
    assert memory.digest() == before and len(list(read_trace(memory.store))) == events
    memory.check()


def test_a_superseded_passage_in_the_working_set_shows_its_interval(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 0)
    [old] = memory.archival_insert("Ana makes 60 calls a day.")
    memory.prefetch("how many calls does Ana make a day?")
    assert old in memory.workset.lines
    turn(memory, clock, 69)
    [new] = memory.archival_insert("Ana makes 1,200 calls a day.")
    memory.supersede([old], new)
    line = memory.workset.lines[old]
    assert f"held 1 May 2023 .. 9 July 2023, replaced by {new:#x}" in line
    assert any(line in (m["content"] or "") for m in memory.compile())
    memory.check()  # the rewritten line is accounted at its new length


def test_archival_search_current_first_and_as_of(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 0)
    [old] = memory.archival_insert("The team makes 60 calls a day, calls calls.")
    turn(memory, clock, 60)
    [new] = memory.archival_insert("The team makes 1,200 calls a day.")
    memory.supersede([old], new)
    assert [p.id for p in memory.archival_search("calls a day").items][:2] == [new, old]
    assert [p.id for p in memory.archival_search("calls a day", as_of=T0 + dt.timedelta(days=1)).items] == [old]


def test_passage_line_shows_the_interval() -> None:
    ts = T0
    cur = Passage(0x100000000000001, "Ana makes 60 calls a day.", ("work",), ts, ts)
    assert passage_line(cur) == "[archival 0x100000000000001 · 1 May 2023 · tags: work] Ana makes 60 calls a day."
    dated = Passage(1, "Ana works at Acme.", (), ts, ts - dt.timedelta(days=365))
    assert "holds since 1 May 2022" in passage_line(dated)
    old = Passage(1, "x", (), ts, ts, ts + dt.timedelta(days=69), 0x100000000000002)
    assert "held 1 May 2023 .. 9 July 2023, replaced by 0x100000000000002" in passage_line(old)
    gone = Passage(1, "x", (), ts, None, ts + dt.timedelta(days=1), None)
    assert "held 1 May 2023 .. 2 May 2023, no longer true" in passage_line(gone)


# ---------------------------------------------------------------- the memory function


def _call(memory: Memory, name: str, **arguments: object) -> tuple[bool, str]:
    """The model calls ``name``: its assistant message, then the call executed."""
    from vmem.kernel.drivers import ToolCall

    cid = f"c{len(memory.queue.messages)}"
    memory.append({"role": "assistant", "content": None, "tool_calls": [
        {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}]})
    record = memory.execute(ToolCall(cid, name, arguments))
    return record.ok, json.loads(record.result)["message"]


def test_archival_memory_update_replaces_a_fact(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 0, "My team makes 60 calls a day.")
    [old] = memory.archival_insert("The user's team makes 60 calls a day.")
    turn(memory, clock, 69, "We grew: now it's 1,200 calls a day.")
    ok, result = _call(memory, "archival_memory_update", old_id=f"{old:#x}",
                       new_content="The user's team makes 1,200 calls a day.", tags=["work"])
    assert ok, result
    found = memory.archival_search("how many calls a day").items
    new = found[0]
    assert new.current and "1,200" in new.text and new.tags == ("work",) and new.valid_from == clock.now
    stale = memory.store.archival.get(old)
    assert stale.superseded_by == new.id and stale.invalid_at == clock.now
    assert f"{old:#x} replaced by {new.id:#x}" in result
    ok, listing = _call(memory, "archival_memory_search", query="calls a day")
    assert ok and f"held 1 May 2023 .. 9 July 2023, replaced by {new.id:#x}" in listing
    memory.check()


@pytest.mark.parametrize("old_id, content, error", [
    ("0x1234", "x", "no archival passage"),
    ("abc", "x", "must be a passage id"),
    ("{old}", "   ", "must not be empty"),
    ("{old}", "The user's team makes 60 calls a day.", "itself"),
    ("{gone}", "x", "already replaced"),
])
def test_archival_memory_update_refuses_and_leaves_nothing(memory: Memory, clock: Clock, old_id: str, content: str,
                                                           error: str) -> None:
    turn(memory, clock, 0)
    [old] = memory.archival_insert("The user's team makes 60 calls a day.")
    [gone] = memory.archival_insert("The office is on floor 2.")
    [floor3] = memory.archival_insert("The office is on floor 3.")
    memory.supersede([gone], floor3)
    before = len(memory.store.archival)
    ok, result = _call(memory, "archival_memory_update", old_id=old_id.format(old=f"{old:#x}", gone=f"{gone:#x}"),
                       new_content=content)
    assert not ok and error in result
    assert len(memory.store.archival) == before and memory.store.archival.get(old).current
    memory.check()


def test_the_model_can_ask_what_held_on_a_date(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 0)
    [old] = memory.archival_insert("The user's team makes 60 calls a day.")
    turn(memory, clock, 69)
    [new] = memory.archival_insert("The user's team makes 1,200 calls a day.")
    memory.supersede([old], new)
    ok, then = _call(memory, "archival_memory_search", query="calls a day", as_of="2023-05-20")
    assert ok and f"[archival {old:#x}" in then and f"[archival {new:#x}" not in then and "(1 matches)" in then
    ok, now = _call(memory, "archival_memory_search", query="calls a day")
    assert ok and now.index(f"[archival {new:#x}") < now.index(f"[archival {old:#x}")
    ok, bad = _call(memory, "archival_memory_search", query="calls", as_of="May 20")
    assert not ok and "as_of must be a date" in bad
    memory.check()


def test_an_aborted_transaction_undoes_the_supersede_and_the_rewritten_line(memory: Memory, clock: Clock) -> None:
    turn(memory, clock, 0)
    [old] = memory.archival_insert("Ana makes 60 calls a day.")
    memory.prefetch("how many calls does Ana make a day?")
    turn(memory, clock, 10)
    [new] = memory.archival_insert("Ana makes 90 calls a day.")
    line, before = memory.workset.lines[old], memory.digest()
    with pytest.raises(RuntimeError):
        with memory.transaction():
            assert memory.supersede(iter([old]), new) == [old]
            assert "replaced by" in memory.workset.lines[old]
            raise RuntimeError("abort")
    assert memory.workset.lines[old] == line and memory.store.archival.get(old).current
    assert memory.digest() == before
    memory.check()


def test_a_read_only_memory_refuses_to_supersede(tmp_path: Path, clock: Clock) -> None:
    from vmem.kernel import ReadOnlyError

    m = Memory.create(tmp_path / "a", system="s", blocks={}, clock=clock)
    [a] = m.archival_insert("fact a")
    [b] = m.archival_insert("fact b")
    m.close()
    with Memory.open(tmp_path / "a", read_only=True, clock=clock) as ro:
        with pytest.raises(ReadOnlyError):
            ro.supersede([a], b)
        assert ro.store.archival.get(a).current


def test_the_model_reads_dates_in_words() -> None:
    """Pages and the clock show dates as people write them ("8 May 2023"): a model asked "when"
    copies what it sees, and an ISO date is not how anyone answers."""
    from vmem.kernel.context import message_line, moment_text, render_stats
    from vmem.storage import Message

    at = dt.datetime(2023, 5, 8, 13, 56, 4, tzinfo=UTC)
    line = message_line(Message(id=5, role="user", content="Hi", timestamp=at))
    assert line == "[recall 0x5 · 8 May 2023 13:56 · user] Hi"
    assert moment_text(at.astimezone(dt.timezone(dt.timedelta(hours=-5, minutes=-30)))) == "8 May 2023 08:26 -05:30"
    stats = render_stats(recall=1, archival=0, evicted=0, changed=at.isoformat(), now=at + dt.timedelta(days=1))
    assert "memory last changed: 8 May 2023 13:56; now: 9 May 2023 13:56 UTC" in stats
