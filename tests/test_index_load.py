"""The archival vector index loads in the background: open does not wait for it, writes committed
meanwhile reach it, close stops it, and a child forked meanwhile loads its own.

Each test holds the load at a gate (a wrapper around one step of it) so the order of events is
forced, not left to the scheduler. No test measures time; a gate that is never opened times out
(``GATE``) and the test fails on what it asserts.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from vmem.storage import MemoryDir
from vmem.storage import sqlite as sqlite_backend
from vmem.storage.memdir import DB_NAME, INDEX_NAME

FACTS = [
    "The Nile is the longest river in Africa.",
    "Mount Fuji is the highest mountain in Japan.",
    "Honey never spoils if it is sealed.",
    "Octopuses have three hearts and blue blood.",
    "Bananas are berries, botanically speaking.",
]
GATE = 10.0  # seconds a gate waits at most


def make_store(path: Path) -> list[int]:
    with MemoryDir.open(path, create=True) as s:
        return [pages[0] for pages in s.archival.insert_many(FACTS)]


def loading_thread() -> bool:
    return threading.current_thread().name.startswith("vmem-index-load")


def vector_top(s: MemoryDir, q: str) -> int:
    return s.archival.search(q, mode="vector", page_size=1).hits[0].item.id


def committed_passages(path: Path) -> int:
    conn = sqlite3.connect(f"{(path / DB_NAME).resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM passages").fetchone()[0])
    finally:
        conn.close()


def until(cond: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + GATE
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


@pytest.fixture
def gated(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Hold the background load: ``where`` "before" (before it reads the database) or "after"
    (its snapshot read, before the index is in place). The test sets ``gate`` to let it go."""
    ctl: dict[str, Any] = {"gate": threading.Event(), "held": threading.Event(), "loaded": threading.Event(),
                           "where": None}  # None: not armed (the test makes its store first)
    open_index = sqlite_backend.SqliteArchival._open_index
    stored = sqlite_backend.SqliteArchival._stored_vectors
    load_vectors = sqlite_backend.SqliteArchival._load_vectors

    def hold() -> None:
        if loading_thread() and ctl["where"] is not None:
            ctl["held"].set()
            ctl["gate"].wait(GATE)

    def gated_open(self: Any, db: Any) -> Any:
        if ctl["where"] == "before":
            hold()
        index = open_index(self, db)
        if ctl["where"] is not None:
            ctl["loaded"].set()
        return index

    def gated_stored(self: Any, ids: Any, db: Any) -> Any:
        out = stored(self, ids, db)
        if ctl["where"] == "after":
            hold()
        return out

    def gated_load(self: Any, ids: Any, db: Any = None) -> Any:
        out = load_vectors(self, ids, db)
        if ctl["where"] == "after" and db is not None and not ctl["held"].is_set():
            hold()
        return out

    monkeypatch.setattr(sqlite_backend.SqliteArchival, "_open_index", gated_open)
    monkeypatch.setattr(sqlite_backend.SqliteArchival, "_stored_vectors", gated_stored)
    monkeypatch.setattr(sqlite_backend.SqliteArchival, "_load_vectors", gated_load)
    yield ctl
    ctl["gate"].set()


@pytest.mark.parametrize("where", ["before", "after"])
def test_open_does_not_wait_and_writes_made_meanwhile_reach_the_index(
        tmp_path: Path, gated: dict[str, Any], where: str) -> None:
    ids = make_store(tmp_path / "a")
    gated["where"] = where
    s = MemoryDir.open(tmp_path / "a")
    try:
        assert gated["held"].wait(GATE) and not gated["loaded"].is_set()  # open returned; the load is held
        # what needs no vector runs meanwhile: text search, the conversation, counts
        assert s.archival.search("three hearts", mode="text").hits[0].item.id == ids[3]
        s.recall.append("user", "Hello while the index loads.")
        assert len(s.archival) == len(FACTS)
        # a write commits meanwhile; its index update waits for the load (so it runs in a thread)
        added: list[int] = []

        def write() -> None:
            added.extend(s.archival.insert("Venus spins backwards compared to most planets."))
            s.archival.delete([ids[0]])

        writer = threading.Thread(target=write)
        writer.start()
        assert until(lambda: committed_passages(tmp_path / "a") == len(FACTS) + 1)
        assert not gated["loaded"].is_set()
        gated["gate"].set()
        writer.join(GATE)
        assert not writer.is_alive()
        assert s.archival.index_status in ("loaded", "caught-up")  # type: ignore[attr-defined]
        assert s.archival.verify_index()  # type: ignore[attr-defined]
        assert vector_top(s, "Venus spins backwards compared to most planets.") == added[0]
        assert ids[0] not in {h.item.id for h in s.archival.search("Nile longest river", mode="vector").hits}
    finally:
        gated["gate"].set()
        s.close()
    with MemoryDir.open(tmp_path / "a") as s:  # the index saved at close holds both writes
        assert s.archival.index_status == "loaded"  # type: ignore[attr-defined]
        assert s.archival.verify_index()  # type: ignore[attr-defined]


def test_close_stops_a_load_and_loses_nothing(tmp_path: Path, gated: dict[str, Any]) -> None:
    ids = make_store(tmp_path / "a")
    before = (tmp_path / "a" / INDEX_NAME).read_bytes()
    gated["where"] = "after"
    s = MemoryDir.open(tmp_path / "a")
    archival: Any = s.archival
    assert gated["held"].wait(GATE)
    # the gate opens only once close() has asked the load to stop
    threading.Thread(target=lambda: until(lambda: archival._load.stopping) and gated["gate"].set()).start()
    s.close()
    assert archival._load._thread is not None and not archival._load._thread.is_alive()
    assert not gated["loaded"].is_set() and archival._load.loaded is None  # stopped, not finished
    assert (tmp_path / "a" / INDEX_NAME).read_bytes() == before  # nothing half-built was saved
    with MemoryDir.open(tmp_path / "a") as s:
        assert s.archival.index_status == "loaded"  # type: ignore[attr-defined]
        assert vector_top(s, FACTS[1]) == ids[1]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="os.fork")
def test_a_child_forked_during_the_load_loads_its_own(tmp_path: Path, gated: dict[str, Any]) -> None:
    ids = make_store(tmp_path / "a")
    gated["where"] = "before"
    s = MemoryDir.open(tmp_path / "a")
    try:
        assert gated["held"].wait(GATE)
        pid = os.fork()
        if pid == 0:  # the child: no loading thread, and the lock it held must not be inherited held
            code = 1
            try:
                code = 0 if vector_top(s, FACTS[2]) == ids[2] else 3
            finally:
                sys.stdout.flush()
                os._exit(code)
        deadline = time.monotonic() + GATE
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        if not done:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        assert done and os.waitstatus_to_exitcode(status) == 0
        gated["gate"].set()
        assert vector_top(s, FACTS[4]) == ids[4]  # the parent's own load then ends as usual
    finally:
        gated["gate"].set()
        s.close()


def test_a_read_only_store_loads_its_index_at_first_use_from_its_own_snapshot(tmp_path: Path) -> None:
    ids = make_store(tmp_path / "a")
    with MemoryDir.open(tmp_path / "a") as writer:
        with MemoryDir.open(tmp_path / "a", read_only=True) as reader:
            archival: Any = reader.archival
            assert archival._load._thread is None and archival._load.loaded is None  # nothing loads at open
            new = writer.archival.insert("Venus spins backwards compared to most planets.")[0]
            # the reader sees the commit of its open, and its index holds the same passages
            assert archival.index_status == "loaded" and archival.verify_index()
            assert new not in {h.item.id for h in reader.archival.search("Venus spins backwards", mode="vector").hits}
            assert vector_top(reader, FACTS[3]) == ids[3]



def test_a_first_use_that_close_interrupts_says_the_store_is_closing(tmp_path: Path) -> None:
    """A load stopped by close() ends in the internal Cancelled (a BaseException, so no handler of
    load errors swallows it); what reaches a caller whose first use was loading is StoreClosedError."""
    from vmem.storage import StoreClosedError
    from vmem.storage._db import Database
    from vmem.storage.index_load import Cancelled, IndexLoad

    make_store(tmp_path / "a")
    for read_only in (True, False):
        db = Database(tmp_path / "a" / DB_NAME, create=False, read_only=read_only)
        try:
            def build(_reader: Any) -> Any:
                load.stopping = True  # close() began meanwhile
                raise Cancelled

            load = IndexLoad(db, build, name="a")
            with pytest.raises(StoreClosedError, match="closing"):
                load.index
            assert load.loaded is None
        finally:
            db.close()
