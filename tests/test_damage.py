"""Damage is found, never silent (issue 18, item 6). Bytes of a record are changed in vmem.db's
pages (what a bad disk or a stray write does: SQLite's quick_check and the invariants pass), and
``Memory.check(deep=True)`` and ``vmem check`` must name the damaged record; a WAL tail lost after
a crash is reported as the number of committed transactions missing.
"""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from vmem import InvariantError
from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall

ROOT = Path(__file__).resolve().parents[1]


def answer(messages, tools):
    if not tools:
        return Completion(text="a summary")
    n = len(messages)
    return Completion(tool_calls=[
        ToolCall(f"a{n}", "archival_memory_insert", {"content": f"passage{n} remembers the number {n * 7}"}),
        ToolCall(f"c{n}", "core_memory_append", {"label": "human", "content": f"fact{n}"}),
        ToolCall(f"s{n}", "send_message", {"message": f"reply{n} is here"})])


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("damage") / "agent"
    agent = Agent.create(path, system="You are under test.", driver=ScriptedDriver(answer),
                         blocks={"human": {"value": "", "limit": 4000}},
                         config=MemoryConfig(window=4096, reserve_output=256))
    for i in range(25):
        agent.step(f"message{i} asks about something specific")
    agent.close()  # folds the WAL: every record is in vmem.db's pages
    return path


def targets(path: Path) -> list[tuple[str, bytes]]:
    """Byte strings in vmem.db's records, and the kind of record each is in (the same text may also
    be in the trace's events, which carry no checksum: every occurrence is changed)."""
    data = (path / "vmem.db").read_bytes()
    out = []
    for kind, words in (("messages", [f"message{i} asks".encode() for i in range(25)]),
                        ("passages", [f"passage{n} remembers the number {n * 7}".encode() for n in range(0, 400)]),
                        ("blocks", [b"fact1"]), ("kv", [b"You are under test."])):
        out += [(kind, w) for w in words if w in data]
    return out


@pytest.mark.parametrize("seed", range(20))
def test_a_changed_byte_in_a_record_is_found(pristine, tmp_path, seed):
    rng = random.Random(seed)
    path = tmp_path / "agent"
    shutil.copytree(pristine, path)
    kind, word = rng.choice(targets(path))
    data = (path / "vmem.db").read_bytes()
    k = rng.randrange(len(word))
    changed = word[:k] + (b"G" if word[k:k + 1] != b"G" else b"g") + word[k + 1:]  # "message" -> "messaGe"
    (path / "vmem.db").write_bytes(data.replace(word, changed))
    with sqlite3.connect(path / "vmem.db") as c:  # SQLite itself sees nothing wrong
        assert c.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    with Memory.open(path, read_only=True) as memory:
        with pytest.raises(InvariantError, match=f"invariant 8: .*{kind}"):
            memory.check(deep=True)
    out = subprocess.run([sys.executable, "-m", "vmem.app.cli", "check", str(path)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 1 and kind in out.stdout and "checksum" in out.stdout, out.stdout + out.stderr


def test_an_undamaged_store_checks_clean(pristine, tmp_path):
    path = tmp_path / "agent"
    shutil.copytree(pristine, path)
    with Memory.open(path) as memory:
        memory.check(deep=True)
    out = subprocess.run([sys.executable, "-m", "vmem.app.cli", "check", str(path)], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0 and ": ok (" in out.stdout, out.stdout + out.stderr


@pytest.mark.postgres
def test_an_agent_in_postgresql_checks_clean(pg_server):
    """vmem check takes a PostgreSQL location as every command does (it raised AttributeError,
    reading the directory store's commit count; found by mypy)."""
    url = pg_server.agent_url("checked")
    agent = Agent.create(url, system="s", driver=ScriptedDriver(answer), blocks={"human": ""})
    agent.step("first")
    agent.close()
    out = subprocess.run([sys.executable, "-m", "vmem.app.cli", "check", url], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert out.returncode == 0 and ": ok (" in out.stdout and "commits" in out.stdout, out.stdout + out.stderr


def test_a_lost_wal_tail_is_reported_as_missing_commits(tmp_path):
    path = tmp_path / "agent"
    agent = Agent.create(path, system="s", driver=ScriptedDriver(answer), blocks={"human": {"value": "", "limit": 4000}},
                         config=MemoryConfig(window=4096, reserve_output=256))
    agent.step("first")
    agent.memory.store._db.checkpoint()  # the state so far is in vmem.db; what follows only in the WAL
    saved = (path / "vmem.db").read_bytes()
    for i in range(5):
        agent.step(f"step {i}")
    agent.memory.store._db.conn.execute("PRAGMA wal_autocheckpoint=0")
    # a crash that loses the WAL: the process dies (no close) and the WAL is gone
    lock = (path / "lock").read_bytes()
    shutil.copy(path / "lock", tmp_path / "lock.copy")
    agent.memory.store._release()
    for suffix in ("-wal", "-shm"):
        (path / f"vmem.db{suffix}").unlink(missing_ok=True)
    (path / "vmem.db").write_bytes(saved)
    (path / "lock").write_bytes(lock)
    with Memory.open(path, read_only=True) as memory:
        assert memory.lost_commits >= 5
        with pytest.raises(InvariantError, match="committed transaction"):
            memory.check(deep=True)
    with Memory.open(path) as memory:
        assert memory.lost_commits >= 5
        memory.check()
