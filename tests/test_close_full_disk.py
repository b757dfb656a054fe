"""close() on a full disk (issue 18, item 9): every save is tried, the first error is raised
after them all (a VmemStorageError naming what failed), the lock is released, nothing is lost.
The disk fills for real: a subprocess lowers RLIMIT_FSIZE so that every write past the files'
current sizes fails (EFBIG, as ENOSPC would), then closes.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmem.kernel import Agent, Memory, MemoryConfig
from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall
from vmem.storage import MemoryDir, VmemStorageError

ROOT = Path(__file__).resolve().parents[1]


def fill(path: Path) -> str:
    def answer(messages, tools):
        n = len(messages)
        return Completion(tool_calls=[ToolCall(f"a{n}", "archival_memory_insert", {"content": f"fact {n} " * 20}),
                                      ToolCall(f"s{n}", "send_message", {"message": "ok"})])
    agent = Agent.create(path, system="s", driver=ScriptedDriver(answer), blocks={"human": ""},
                         config=MemoryConfig(window=4096, reserve_output=256))
    for i in range(20):
        agent.step(f"message {i}")
    return agent


def test_close_tries_every_save_raises_the_first_error_and_releases_the_lock(tmp_path, monkeypatch):
    agent = fill(tmp_path / "a")
    digest = agent.memory.digest()
    store = agent.memory.store
    tried = []

    def full(what):
        def fail(*args, **kwargs):
            tried.append(what)
            raise OSError(errno.ENOSPC, "No space left on device")
        return fail

    monkeypatch.setattr(store.archival, "checkpoint", full("archival index"))
    monkeypatch.setattr(store.recall.lexical, "save", full("recall index"))
    monkeypatch.setattr(store._db, "checkpoint", full("checkpoint"))
    with pytest.raises(VmemStorageError, match="No space left") as info:
        agent.close()
    assert tried == ["archival index", "recall index", "checkpoint"]
    assert "archival" in str(info.value) and "also saving the recall text index failed" in str(info.value)
    assert agent.memory.closed
    monkeypatch.undo()
    with Memory.open(tmp_path / "a") as memory:  # the lock is free and nothing is lost
        memory.check()
        assert memory.digest() == digest


CHILD = textwrap.dedent("""
    import resource, signal, sys, os
    from vmem.kernel import Memory
    from vmem.storage import VmemStorageError
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    memory = Memory.open(sys.argv[1])
    memory.archival_insert("one more fact, committed before the disk fills " * 30)
    # the disk is full from here: no file may grow
    biggest = max(os.path.getsize(os.path.join(sys.argv[1], f)) for f in os.listdir(sys.argv[1])
                  if os.path.isfile(os.path.join(sys.argv[1], f)))
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    try:
        memory.close()
    except VmemStorageError as exc:
        print("RAISED", type(exc).__name__, str(exc)[:200])
    else:
        print("CLOSED")
    print("CLOSED_FLAG", memory.closed)
""")


def test_close_on_a_really_full_disk_in_a_subprocess(tmp_path):
    agent = fill(tmp_path / "a")
    agent.close()
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "a")], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "RAISED VmemStorageError" in out.stdout and "CLOSED_FLAG True" in out.stdout, out.stdout
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    with Memory.open(tmp_path / "a") as memory:  # the lock is free and nothing is lost
        memory.check()
        assert memory.archival_search("one more fact before the disk fills", page=0).total >= 1
