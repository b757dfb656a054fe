"""The PostgreSQL store's own guarantees: locations, the agent's lock, caches that follow other
processes' commits, read-only snapshots, workers that interleave or die mid-step."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest

from vmem.kernel import Memory
from vmem.storage import StoreLockedError, StoreNotFoundError, open_store
from vmem.storage.postgres_connect import PgLocation
from vmem.storage.postgres_db import StaleStoreError

pytestmark = pytest.mark.postgres

WORKER = Path(__file__).resolve().parent / "pg_worker.py"


# ---------------------------------------------------------------- locations


def test_a_location_names_one_agent_and_keeps_other_parameters() -> None:
    loc = PgLocation.parse("postgresql://u:secret@db.example:5432/app?sslmode=require&agent=ana")
    assert loc.agent == "ana"
    assert loc.dsn == "postgresql://u:secret@db.example:5432/app?sslmode=require"
    assert "secret" not in str(loc) and "agent=ana" in str(loc)
    for bad in ("postgresql://u@h/db", "postgresql://u@h/db?agent=", "postgresql://u@h/db?agent=a&agent=b",
                "postgresql://u@h/db?agent=a%20b", "mysql://u@h/db?agent=a"):
        with pytest.raises(ValueError):
            PgLocation.parse(bad)


def test_open_without_create_needs_the_agent(pg_server) -> None:
    with pytest.raises(StoreNotFoundError, match="no vmem agent"):
        open_store(pg_server.agent_url("absent"), create=False)
    assert not Memory.exists(pg_server.agent_url("absent"))


def test_agents_in_one_database_are_separate(pg_server) -> None:
    a, b = pg_server.agent_url("a"), pg_server.agent_url("b")
    with open_store(a) as sa, open_store(b) as sb:
        sa.recall.append("user", "apples for ana")
        sa.archival.insert("ana's passage about apples")
        sa.blocks.create("human", "Ana")
        sb.recall.append("user", "bananas for bob")
        assert [m.item.content for m in sb.recall.search("apples").hits] == []
        assert sb.archival.search("apples").items == [] and "human" not in sb.blocks
        assert len(sa.recall) == len(sb.recall) == 1
        assert sa.recall.get(sa.recall.last_id()).content == "apples for ana"  # ids are per agent
        assert sa.recall.last_id() == sb.recall.last_id()


def test_dropping_an_agent_removes_every_row(pg_server) -> None:
    url = pg_server.agent_url("gone")
    m = Memory.create(url, system="s", blocks={"human": "x"})
    m.append({"role": "user", "content": "hello"})
    m.archival_insert("a fact")
    m.close()
    with open_store(url, create=False) as s:
        s.drop()
    import psycopg

    with psycopg.connect(pg_server.url) as conn:
        for table in ("messages", "passages", "passage_tags", "blocks", "kv", "events", "journal", "meta"):
            n = conn.execute(f"SELECT count(*) FROM vmem.{table} t JOIN vmem.agents a ON a.id = t.agent "
                             "WHERE a.name = %s", (PgLocation.parse(url).agent,)).fetchone()[0]
            assert n == 0, table
    assert not Memory.exists(url)


# ---------------------------------------------------------------- the agent's lock


def test_a_transaction_holds_the_agents_lock_and_others_wait_a_bounded_time(pg_server) -> None:
    url, other = pg_server.agent_url("locked"), pg_server.agent_url("free")
    with open_store(url) as first, open_store(url, lock_timeout_ms=200) as second, open_store(other) as third:
        with first.transaction():
            first.recall.append("user", "held")
            t = time.monotonic()
            with pytest.raises(StoreLockedError, match="busy in another process"):
                second.recall.append("user", "refused")
            assert time.monotonic() - t >= 0.15
            third.recall.append("user", "another agent is not blocked")  # different agents in parallel
        assert second.recall.append("user", "after the commit")  # the lock went with the commit
        assert [m.content for m in second.recall.get_many([
            p.id for p in second.recall.search(None, page_size=10).items])] == ["after the commit", "held"]


def test_a_second_writer_waits_for_the_first_instead_of_interleaving(pg_server) -> None:
    url = pg_server.agent_url("wait")
    order: list[str] = []
    with open_store(url) as first, open_store(url) as second:
        ready = threading.Event()

        def other() -> None:
            ready.wait()
            second.recall.append("user", "second")
            order.append("second committed")

        thread = threading.Thread(target=other)
        thread.start()
        with first.transaction():
            first.recall.append("user", "first")
            ready.set()
            time.sleep(0.3)  # the other writer is blocked on the agent's row meanwhile
            order.append("first commits")
        thread.join(10)
        assert order == ["first commits", "second committed"]
        assert len(first.recall) == 2


# ---------------------------------------------------------------- caches follow other processes


def test_caches_catch_up_with_another_writers_commits(pg_server) -> None:
    url = pg_server.agent_url("caches")
    with open_store(url) as a, open_store(url) as b:
        assert b.recall.search("zebra").hits == []
        mid = a.recall.append("user", "a zebra crossed the road")
        pids = a.archival.insert_many(["zebras have stripes", "lions eat zebras"])
        assert [h.item.id for h in b.recall.search("zebra").hits] == [mid]  # text index caught up
        for mode in ("text", "vector", "hybrid"):
            assert {p.id for p in b.archival.search("zebra stripes", mode=mode).items} == {i[0] for i in pids}
        a.archival.delete([pids[0][0]])
        for mode in ("text", "vector", "hybrid"):
            assert {p.id for p in b.archival.search("zebra stripes", mode=mode).items} == {pids[1][0]}
        assert b.archival.verify_index() and b.archival.verify_text_index() and b.recall.lexical.verify()
        with b.transaction():  # a writer's transaction catches up under the lock, too
            assert b.version == a.version
            b.recall.append("user", "b writes after a")
        assert a.recall.search("writes").total == 1


def test_writes_queued_in_a_transaction_are_seen_by_its_reads_and_undone_with_it(pg_server) -> None:
    url = pg_server.agent_url("deferred")
    with open_store(url) as s, open_store(url, read_only=True) as other:
        with s.transaction():
            mid = s.recall.append("user", "queued, then read back")
            s.events.extend([{"e": "x", "n": 1}, {"e": "x", "n": 2}])
            assert s.recall.get(mid).content == "queued, then read back"  # the read sends the queue first
            assert [e["n"] for _, e in s.events.tail(2)] == [1, 2]
        with pytest.raises(RuntimeError, match="boom"), s.transaction():
            s.recall.append("user", "never committed")
            s.journal.append(b"never")
            raise RuntimeError("boom")
        assert len(s.recall) == 1 and len(s.journal) == 0 and len(s.events) == 2
        with s.transaction():
            kept = s.recall.append("user", "kept")
            with pytest.raises(RuntimeError), s.savepoint():
                s.recall.append("user", "undone with its savepoint")
                s.events.extend([{"e": "undone"}])
                raise RuntimeError("the part fails alone")
            with s.savepoint():  # writes nothing: not sent at all
                pass
            with pytest.raises(RuntimeError), s.savepoint():
                gone = s.recall.append("user", "sent by the read below, then rolled back")
                assert s.recall.get(gone).content.startswith("sent")  # the SAVEPOINT and the row went
                with s.savepoint():
                    s.events.extend([{"e": "inner"}])
                raise RuntimeError("after the server saw it")
            with s.savepoint():
                after = s.recall.append("user", "after the savepoint")
        assert [m.content for m in s.recall.get_many([mid, kept, after])] == [
            "queued, then read back", "kept", "after the savepoint"]
        assert len(s.recall) == 3
        assert [e["e"] for _, e in s.events.read()] == ["x", "x"]
        other.refresh()
        assert len(other.recall) == 3
    with open_store(url) as again:  # the ids handed out after the failed savepoint were reused, not skipped
        assert [m.id for m in again.recall.search(None, page_size=10).items][::-1] == [mid, kept, after]
        assert after == kept + 1


def _record_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now until ``monkeypatch.undo()``: the text of every statement psycopg is asked to
    execute, in order (a simple query of several statements is one entry)."""
    import psycopg

    sent: list[str] = []
    execute = psycopg.Cursor.execute

    def recording(self, query, *args, **kw):  # type: ignore[no-untyped-def]
        sent.append(query if isinstance(query, str) else repr(query))
        return execute(self, query, *args, **kw)

    monkeypatch.setattr(psycopg.Cursor, "execute", recording)
    return sent


def test_a_plain_step_costs_two_round_trips(pg_server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Round trips and statements are a step's cost on a server: a step that only answers sends
    BEGIN with the lock, then its writes (one INSERT per table, state, counters) and COMMIT as one
    simple query; not one statement per row, nor a savepoint per call. A bulk write goes
    pipelined, its values in binary."""
    from vmem.kernel import Agent
    from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall

    url = pg_server.agent_url("statements")
    reply = ScriptedDriver(lambda messages, tools: Completion(
        tool_calls=[ToolCall(f"c{len(messages)}", "send_message", {"message": "ok; it's 100%"})]))
    agent = Agent.create(url, system="s", blocks={"human": ""}, driver=reply)
    try:
        agent.step("hello")
        sent = _record_statements(monkeypatch)
        agent.step("how are you? 'quoted'; -- not a comment \\ %s")
        step = sent[:next(i for i, q in enumerate(sent) if q.endswith("COMMIT")) + 1]  # then check() reads
        assert len(step) == 2 and step[0].startswith("BEGIN") and "vmem.agents" in step[0], step
        writes = step[1]
        assert "SAVEPOINT" not in writes and writes.count("INSERT INTO vmem.messages") == 1, writes
        assert writes.count("(%s") == 0  # bound in the process

        with open_store(pg_server.agent_url("bulk"), create=True) as bulk:
            del sent[:]
            ids = bulk.recall.append_many([{"role": "user", "content": f"bulk {i}"} for i in range(200)])
            monkeypatch.undo()
            assert sent[-1] == "COMMIT" and sum(q.startswith("INSERT INTO vmem.messages") for q in sent) == 1, sent
            assert [m.content for m in bulk.recall.get_many([ids[0], ids[-1]])] == ["bulk 0", "bulk 199"]
    finally:
        agent.close()
    with Memory.open(url) as m:
        m.check()
        assert [c["role"] for c in m.queue.messages][-3:] == ["user", "assistant", "tool"]
        said = [h.item.content for h in m.store.recall.search(None, roles=["user"], page_size=300).hits]
        assert "how are you? 'quoted'; -- not a comment \\ %s" in said
        call = m.queue.messages[-2]["tool_calls"][0]["function"]
        assert json.loads(call["arguments"]) == {"message": "ok; it's 100%"}


def test_a_fact_superseded_by_another_writer_ranks_last_at_the_next_search(pg_server) -> None:
    """A search asks first whether any passage is superseded (then current facts rank first); the
    answer is kept between searches, and another process's supersede must still be seen."""
    url = pg_server.agent_url("superseded")
    with open_store(url) as a, open_store(url) as b:
        (old,), (new,) = a.archival.insert_many(["Ana lives in Lisbon, Lisbon, Lisbon", "Ana lives in Porto"])
        for s in (a, b):
            assert s.archival.search("Ana Lisbon", mode="text").items[0].id == old  # nothing superseded yet
        a.archival.supersede([old], new, datetime.now(timezone.utc))
        for s in (a, b):
            assert [p.id for p in s.archival.search("Ana Lisbon", mode="text").items] == [new, old]
        with pytest.raises(RuntimeError), b.transaction():  # read inside, then rolled back: not kept
            b.archival.delete([new])
            assert [p.id for p in b.archival.search("Ana Lisbon", mode="text").items] == [old]
            raise RuntimeError("undo")
        assert [p.id for p in b.archival.search("Ana Lisbon", mode="text").items] == [new, old]


def test_a_strict_store_refuses_a_stale_transaction_once_and_writes_nothing(pg_server) -> None:
    url = pg_server.agent_url("strict")
    with open_store(url) as a, open_store(url) as b:
        b.strict = True
        a.recall.append("user", "from a")
        with pytest.raises(StaleStoreError):
            b.recall.append("user", "from b")
        assert len(a.recall) == 1
        b.recall.append("user", "from b")  # it saw the change: the next one goes through
        assert len(a.recall) == 2


def test_a_memory_reloads_what_another_process_changed_before_its_next_transaction(pg_server) -> None:
    url = pg_server.agent_url("reload")
    Memory.create(url, system="s", blocks={"human": "Ana"}).close()
    m1, m2 = Memory.open(url), Memory.open(url)
    try:
        m1.append({"role": "user", "content": "one"})
        m2.append({"role": "user", "content": "two"})
        m2.update_block("human", value="Ana, who likes tea")
        m1.append({"role": "user", "content": "three"})
        for m in (m1, m2):
            m.check()
        assert [c["content"] for c in m1.queue.messages] == ["one", "two", "three"]
        assert "likes tea" in next(m["content"] for m in m1.compile() if m["content"].startswith("<core_memory"))
        digest = m1.digest()
    finally:
        m1.close()
        m2.close()
    with Memory.open(url) as again:
        assert again.digest() == digest


def test_a_read_only_open_reads_one_snapshot_and_never_blocks_the_writer(pg_server) -> None:
    url = pg_server.agent_url("snapshot")
    m = Memory.create(url, system="s", blocks={"human": ""})
    m.append({"role": "user", "content": "before"})
    view = Memory.open(url, read_only=True)
    try:
        with m.transaction():  # the writer holds the agent's lock: the reader reads anyway
            m.append({"role": "user", "content": "during"})
            assert [c["content"] for c in view.queue.messages] == ["before"]
            assert len(view.store.recall) == 1
            with Memory.open(url, read_only=True) as late:  # opening beside the lock does not wait either
                assert [c["content"] for c in late.queue.messages] == ["before"]
        m.append({"role": "user", "content": "after"})
        assert len(view.store.recall) == 1 and view.store.recall.search("after").hits == []  # one snapshot
        view.store.refresh()
        assert len(view.store.recall) == 3 and view.store.recall.search("after").total == 1
    finally:
        view.close()
        m.close()


# ---------------------------------------------------------------- worker processes


def _worker(url: str, name: str, steps: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(WORKER), url, name, str(steps), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _created(url: str) -> None:
    w = _worker(url, "-", 0, "--create")
    out, err = w.communicate(timeout=120)
    assert w.returncode == 0 and out.strip() == "created", err[-3000:]


def _user_messages(url: str) -> Counter[str]:
    with open_store(url, create=False, read_only=True) as s:
        page = s.recall.search(None, roles=["user"], page_size=1000)
        assert page.total < 1000
        return Counter(h.item.content for h in page.hits)


def test_two_processes_stepping_one_agent_never_interleave(pg_server) -> None:
    url = pg_server.agent_url("pair")
    _created(url)
    workers = [_worker(url, name, 12) for name in ("w1", "w2")]
    outs = [w.communicate(timeout=300) for w in workers]
    for w, (out, err) in zip(workers, outs):
        assert w.returncode == 0, err[-3000:]
    acked = [line.split()[1] for out, _ in outs for line in out.splitlines() if line.startswith("ack ")]
    assert len(acked) == 24
    present = _user_messages(url)
    assert all(present[a] == 1 for a in acked) and sum(present.values()) == 24
    with Memory.open(url) as m:
        m.check()
        # one step's messages are contiguous in recall: user, then its replies, never another step's user
        with open_store(url, create=False, read_only=True) as s:
            rows = [h.item for h in s.recall.search(None, page_size=1000).hits][::-1]
        users = [i for i, msg in enumerate(rows) if msg.role == "user"]
        steps = [rows[a:b] for a, b in zip(users, users[1:] + [len(rows)])]
        assert all(all(msg.role != "user" for msg in step[1:]) for step in steps)
        assert len(steps) == 24


def test_a_worker_killed_mid_step_loses_nothing_acknowledged(pg_server) -> None:
    url = pg_server.agent_url("killed")
    _created(url)
    acked: list[str] = []
    for round_ in range(4):
        w = _worker(url, f"r{round_}", 1000)
        deadline = time.monotonic() + 60
        got = 0
        assert w.stdout is not None
        while got < 3 + round_ and time.monotonic() < deadline:  # a few steps, then SIGKILL mid-way
            line = w.stdout.readline()
            if line.startswith("ack "):
                acked.append(line.split()[1])
                got += 1
        time.sleep(0.003 * round_)
        os.kill(w.pid, signal.SIGKILL)
        w.wait(30)
        acked.extend(line.split()[1] for line in w.stdout.read().splitlines() if line.startswith("ack "))
        w.stderr.close() if w.stderr else None
        w.stdout.close()
        assert got >= 3
    present = _user_messages(url)
    assert all(present[a] == 1 for a in acked), [a for a in acked if present[a] != 1]
    assert all(n == 1 for n in present.values())  # no step applied twice
    with Memory.open(url) as m:
        m.check()
    finisher = _worker(url, "after", 2)
    out, err = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, err[-3000:]


def test_a_reopened_agent_takes_over_its_indexes_and_catches_them_up(pg_server) -> None:
    url = pg_server.agent_url("cached")
    with open_store(url) as s:
        s.recall.append("user", "the first walrus")
        [gone] = s.archival.insert("walrus facts that will be deleted")
        s.archival.insert("walrus tusks are teeth")
    code = (f"from vmem.storage import open_store\n"
            f"with open_store({url!r}, create=False) as s:\n"
            f"    s.recall.append('user', 'a second walrus, written by another process')\n"
            f"    s.archival.insert('walruses sleep in water')\n"
            f"    s.archival.delete([{gone}])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    with open_store(url, create=False) as s:
        assert s.recall.lexical.status == "cached" and s.archival.index_status == "cached"
        assert s.recall.search("walrus").total == 2
        found = {p.text for p in s.archival.search("walrus", mode="hybrid", page_size=10).items}
        assert found == {"walrus tusks are teeth", "walruses sleep in water"}
        assert s.archival.verify_index() and s.archival.verify_text_index() and s.recall.lexical.verify()


def test_an_lru_of_open_memories_serves_many_agents_within_its_bound(pg_server) -> None:
    from vmem.kernel import BusyError, OpenMemories

    urls = [pg_server.agent_url(f"lru{i}") for i in range(5)]
    for url in urls:
        Memory.create(url, system="s", blocks={}).close()
    with OpenMemories(max_open=2) as memories:
        for round_ in range(2):
            for i, url in enumerate(urls):
                with memories.use(url) as m:
                    m.append({"role": "user", "content": f"round {round_} to agent {i}"})
                assert len(memories) <= 2
        with memories.use(urls[4]) as m:  # the most recent one is still open
            assert len(m.queue) == 2
            with pytest.raises(BusyError, match="in use"):
                with memories.use(urls[4]):
                    pass
            with memories.use(urls[0]):
                with pytest.raises(BusyError, match="all 2 open memories are in use"):
                    with memories.use(urls[1]):
                        pass
        assert memories.reused >= 1 and memories.opened == 11
    for url in urls:
        with Memory.open(url) as m:
            m.check()
            assert len(m.queue) == 2


def test_an_unreachable_server_is_a_clear_error_at_once(tmp_path) -> None:
    from vmem.storage import BackendError

    url = "postgresql://nobody@127.0.0.1:1/none?agent=a"
    t = time.monotonic()
    with pytest.raises(BackendError, match="cannot connect to postgresql://nobody@127.0.0.1:1/none"):
        Memory.open(url)
    assert time.monotonic() - t < 10  # the server's refusal, not a pool's timeout
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "inspect", url], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode != 0 and "cannot connect" in p.stderr and "Traceback" not in p.stderr


# ---------------------------------------------------------------- the commands on a PostgreSQL agent


def test_the_mcp_service_shares_an_agent_with_another_writer(pg_server) -> None:
    from vmem.app.mcp_server import MemoryService

    url = pg_server.agent_url("mcp")
    Memory.create(url, system="s", blocks={"human": "Name: Ana"}).close()
    service = MemoryService(url, hold=3600)
    try:
        assert service.call("core_memory_append", {"label": "human", "content": "one"}).ok
        with Memory.open(url) as other:  # no exclusive open in PostgreSQL: both write, one at a time
            other.append({"role": "user", "content": "hello from the other writer"})
            assert other.block("human").value == "Name: Ana\none"
            with other.transaction():  # while it holds the agent, a call says it is busy
                other.append({"role": "user", "content": "holding"})
                busy = service.call("core_memory_append", {"label": "human", "content": "two"})
                assert not busy.ok and "in use by another writer" in busy.result
        assert service.call("core_memory_append", {"label": "human", "content": "three"}).ok
        found = service.call("conversation_search", {"query": "other writer"})
        assert found.ok and "hello from the other writer" in found.result
    finally:
        service.close()
    with Memory.open(url) as m:
        m.check()
        assert m.block("human").value == "Name: Ana\none\nthree"


def test_demo_inspect_and_export_take_a_postgresql_location(pg_server, tmp_path) -> None:
    url = pg_server.agent_url("demo")
    run = lambda *a: subprocess.run([sys.executable, "-m", "vmem.app.cli", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=600)
    p = run("demo", "--dir", url, "--quiet")
    assert p.returncode == 0, p.stderr[-2000:]
    p = run("inspect", url)
    assert p.returncode == 0 and "core" in p.stdout.lower(), p.stderr[-2000:]
    p = run("export", url, str(tmp_path / "demo.af"))
    assert p.returncode == 0 and (tmp_path / "demo.af").stat().st_size > 0, p.stderr[-2000:]
    p = run("demo", "--dir", url, "--quiet")
    assert p.returncode == 2 and "holds an agent already" in p.stderr


def test_a_store_borrows_a_connection_per_transaction_and_its_settings_stay_in_it(pg_server) -> None:
    url = pg_server.agent_url("settings")
    with open_store(url, durability="normal") as s:
        assert s._db.conn is None  # between transactions the connection is the pool's
        with s.transaction():
            conn = s._db.conn
            assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "off"
            s.state["k"] = 1
        assert s._db.conn is None
        # back in the pool (idle: looked at directly here), the connection has the server's default
        assert conn.execute("SHOW synchronous_commit").fetchone()[0] == "on"
        assert s.state["k"] == 1


def test_more_open_stores_than_pooled_connections_all_write(pg_server) -> None:
    """An open store holds no connection between transactions, so a worker can keep many
    agents open (an LRU of hundreds) with a pool of a few connections."""
    from vmem.storage.postgres_connect import POOL_MAX, pool_for

    pool = pool_for(pg_server.url)
    timeout, pool.timeout = pool.timeout, 2.0  # a store that holds its connection fails fast here
    stores = []
    try:
        for i in range(POOL_MAX + 8):
            stores.append(open_store(pg_server.agent_url(f"many{i}")))
        for i, s in enumerate(stores):
            s.recall.append("user", f"hello {i}")
        assert [len(s.recall) for s in stores] == [1] * len(stores)
    finally:
        pool.timeout = timeout
        for s in stores:
            s.close()


def test_every_method_that_speaks_sqlite_has_its_postgresql_version() -> None:
    """A guard for later changes: a tier method that runs SQL on SQLite must be overridden by
    the PostgreSQL class (else the PostgreSQL store would run SQLite's SQL on its tables)."""
    import inspect

    from vmem.storage.blocks import Blocks, KernelState
    from vmem.storage.events import EventLog
    from vmem.storage.journal import Journal
    from vmem.storage.postgres_archival import PgArchival
    from vmem.storage.postgres_tiers import PgBlocks, PgEventLog, PgJournal, PgKernelState, PgRecall
    from vmem.storage.recall import RecallStore
    from vmem.storage.sqlite import SqliteArchival

    missing = []
    for base, sub in [(SqliteArchival, PgArchival), (RecallStore, PgRecall), (Blocks, PgBlocks),
                      (KernelState, PgKernelState), (EventLog, PgEventLog), (Journal, PgJournal)]:
        for name, fn in vars(base).items():
            if not callable(fn):
                continue
            src = inspect.getsource(fn)
            if any(k in src for k in ("execute(", ".reading(", "executemany", "sqlite_")) and name not in vars(sub):
                missing.append(f"{base.__name__}.{name}")
    assert not missing, missing


def test_the_mcp_server_serves_a_postgresql_location(pg_server) -> None:
    from vmem.app.mcp_server import MemoryService, build_server

    url = pg_server.agent_url("mcp")
    Memory.create(url, system="s", blocks={"human": "Ana"}).close()
    service = MemoryService(url, hold=0)
    server = build_server(service)  # named by the agent's URL (without a password), not a directory's name
    assert "agent=mcp" in server.instructions and "agent=mcp" in server.title
    service.close()


def test_the_passage_count_in_a_transaction_follows_its_inserts_savepoints_and_rollbacks(pg_server) -> None:
    # The statistics count passages after every insert; in a transaction the count comes from the
    # caches plus the transaction's own changes (no count(*) round trip): it must match the table.
    import psycopg

    url = pg_server.agent_url("count")

    def in_table() -> int:
        with psycopg.connect(pg_server.url) as conn:
            return int(conn.execute("SELECT count(*) FROM vmem.passages WHERE agent=%s", (agent,)).fetchone()[0])

    with Memory.create(url, system="s") as memory:
        archival = memory.store.archival
        agent = archival._db.agent  # the agent's key in every table
        memory.archival_insert("one")
        with memory.transaction():
            assert len(archival) == 1
            memory.archival_insert("two")
            memory.archival_insert("two")  # a duplicate adds nothing
            assert len(archival) == 2
            with pytest.raises(RuntimeError):
                with memory.savepoint():
                    memory.archival_insert_many(["three", "four"])
                    assert len(archival) == 4
                    raise RuntimeError("the call failed")
            assert len(archival) == 2
            memory.store.archival.delete([memory.archival_search("one").items[0].id])
            assert len(archival) == 1
        assert len(archival) == in_table() == 1
        with pytest.raises(RuntimeError):
            with memory.transaction():
                memory.archival_insert("five")
                assert len(archival) == 2
                raise RuntimeError("the step failed")
        assert len(archival) == in_table() == 1
        with memory.transaction():
            assert len(archival) == 1
        memory.check()


def test_an_insert_asks_the_server_about_duplicates_only_when_it_may_have_one(pg_server,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """An insert of new text sends no SELECT (the process's hash filter says it is new); a
    passage another writer added, one a rolled-back transaction tried, and a superseded text
    are still found or re-stored exactly as without the filter."""
    url = pg_server.agent_url("hash-filter")
    with open_store(url, create=True) as a, open_store(url) as b:
        (first,), = a.archival.insert_many(["Ana lives in Lisbon"])
        asked = _record_statements(monkeypatch)
        (second,), = a.archival.insert_many(["Ana has a beagle called Pixel"])
        assert not any("hash = ANY" in q for q in asked), asked
        (again,), = a.archival.insert_many(["Ana lives in Lisbon"])  # may be stored: asked, and found
        assert again == first and any("hash = ANY" in q for q in asked)
        monkeypatch.undo()

        (by_b,), = b.archival.insert_many(["Ana works at a bakery"])  # another writer's passage
        (seen,), = a.archival.insert_many(["Ana works at a bakery"])
        assert seen == by_b

        with pytest.raises(RuntimeError):
            with a.transaction():
                a.archival.insert_many(["Ana runs on Sundays"])
                raise RuntimeError("rolled back")
        (runs,), = a.archival.insert_many(["Ana runs on Sundays"])
        assert [p.text for p in a.archival.get_many([runs])] == ["Ana runs on Sundays"]

        a.archival.supersede([first], second, datetime.now(timezone.utc))
        (back,), = a.archival.insert_many(["Ana lives in Lisbon"])  # a superseded text is stored anew
        assert back not in (first, second) and len(a.archival) == 5
    with open_store(url) as c:
        assert len(c.archival) == 5
        texts = sorted(h.item.text for h in c.archival.search("Ana", mode="text", page_size=10).hits)
        assert texts == sorted(["Ana lives in Lisbon", "Ana lives in Lisbon", "Ana has a beagle called Pixel",
                                "Ana works at a bakery", "Ana runs on Sundays"])
