"""vmem migrate: an agent copied between a directory and PostgreSQL, either way, digest for digest."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kernel_helpers import ChattyPolicy
from vmem.kernel import Agent, KernelError, Memory, MemoryConfig, migrate
from vmem.kernel.drivers import ScriptedDriver
from vmem.storage import StoreNotFoundError, open_store

pytestmark = pytest.mark.postgres


def _agent(where) -> str:
    """An agent with evictions behind a summary, archival passages (one superseded), a block edit."""
    agent = Agent.create(where, system="s", blocks={"human": ""}, driver=ScriptedDriver(ChattyPolicy()),
                         config=MemoryConfig(window=4096, reserve_output=512))
    for i in range(40):
        agent.step(f"message {i}: I had tea with Ana on day {i} and we talked about the garden")
    m = agent.memory
    old = m.archival_insert("Ana lives in Lisbon")[0]
    m.supersede([old], m.archival_insert("Ana lives in Porto")[0])
    m.update_block("human", value="Ana likes tea")
    assert m.evicted > 0
    digest = m.digest()
    agent.close()
    return digest


def test_a_directory_goes_to_postgres_and_back_with_the_same_digest(tmp_path: Path, pg_server) -> None:
    digest = _agent(tmp_path / "a")
    url = pg_server.agent_url("migrated")
    assert migrate(tmp_path / "a", url) == digest
    assert migrate(url, tmp_path / "b") == digest
    for where in (url, tmp_path / "b"):  # both copies go on as agents, and search the copied history
        agent = Agent.open(where, driver=ScriptedDriver(ChattyPolicy()))
        agent.step("one more")
        assert agent.memory.store.recall.search("garden").total >= 40
        assert [p.text for p in agent.memory.store.archival.search("lives", mode="text").items] == [
            "Ana lives in Porto", "Ana lives in Lisbon"]  # current first: the interval came along
        agent.close()


def test_migrate_refuses_an_occupied_destination_and_a_missing_source(tmp_path: Path, pg_server) -> None:
    _agent(tmp_path / "a")
    url = pg_server.agent_url("taken")
    Memory.create(url, system="other", blocks={}).close()
    with pytest.raises(KernelError, match="holds an agent already"):
        migrate(tmp_path / "a", url)
    with pytest.raises(KernelError, match="holds no vmem agent"):
        migrate(pg_server.agent_url("nobody"), tmp_path / "c")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(KernelError, match="not an empty directory"):
        migrate(tmp_path / "a", tmp_path / "full")


def test_a_copy_that_does_not_match_leaves_nothing(tmp_path: Path, pg_server, monkeypatch) -> None:
    _agent(tmp_path / "a")
    url = pg_server.agent_url("mismatch")
    import vmem.storage.migrate as mig

    real = mig.TABLES
    monkeypatch.setattr(mig, "TABLES", {k: v for k, v in real.items() if k != "journal"})  # a lossy copy
    with pytest.raises(KernelError, match="does not match"):
        migrate(tmp_path / "a", url)
    with pytest.raises(StoreNotFoundError):
        open_store(url, create=False)
    monkeypatch.setattr(mig, "TABLES", real)
    assert migrate(tmp_path / "a", url)  # the location is free again


def test_the_command(tmp_path: Path, pg_server) -> None:
    digest = _agent(tmp_path / "a")
    url = pg_server.agent_url("cli")
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "migrate", str(tmp_path / "a"), url],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert digest[:16] in p.stdout
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "migrate", str(tmp_path / "a"), url],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and "holds an agent already" in p.stderr
