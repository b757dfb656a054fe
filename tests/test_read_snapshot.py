"""Readers see one state (issue 18, item 5): a read-only open beside a writer stepping as fast as
it can reads every tier and cache at one committed version, so check() passes on every open.
40 opens here; 500 with ``-m slow`` (or VMEM_SLOW=1).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vmem.kernel import Memory, MemoryConfig

ROOT = Path(__file__).resolve().parents[1]

WRITER = textwrap.dedent("""
    import sys
    from vmem.kernel import Agent
    from vmem.kernel.drivers import Completion, ScriptedDriver, ToolCall

    def answer(messages, tools):
        if not tools:
            return Completion(text="a summary of the conversation so far")
        n = len(messages)
        return Completion(tool_calls=[
            ToolCall(f"a{n}", "archival_memory_insert", {"content": f"fact {n}: " + "words " * 12}),
            ToolCall(f"c{n}", "core_memory_append", {"label": "human", "content": f"n{n % 7}"}),
            ToolCall(f"s{n}", "send_message", {"message": f"ok {n}"})])

    agent = Agent.open(sys.argv[1], driver=ScriptedDriver(answer), durability="normal")
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        agent.step(f"message {i} " + "lorem ipsum " * 8)
        if i % 40 == 0:  # keep the block under its limit
            agent.memory.set_block("human", "")
""")


def run_beside_a_writer(tmp_path: Path, opens: int) -> None:
    path = tmp_path / "agent"
    Memory.create(path, system="s", blocks={"human": {"value": "", "limit": 400}},
                  config=MemoryConfig(window=4096, reserve_output=256, prefetch=1)).close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True,
                              stderr=subprocess.PIPE, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    failures = []
    try:
        assert writer.stdout.readline().strip() == "ready", writer.stderr.read()
        time.sleep(0.3)
        for i in range(opens):
            try:
                with Memory.open(path, read_only=True) as memory:
                    memory.check()
                    memory.compile()
                    memory.conversation_search("message", page=0)
                    memory.archival_search("fact words", page=0)
            except Exception as exc:  # noqa: BLE001 - counted
                failures.append(f"open {i}: {type(exc).__name__}: {exc}")
            assert writer.poll() is None, writer.stderr.read()[-3000:]
    finally:
        writer.kill()
        writer.wait(30)
    assert not failures, f"{len(failures)} of {opens} opens failed:\n" + "\n".join(failures[:10])
    with Memory.open(path) as memory:
        memory.check()


def test_read_only_opens_beside_a_stepping_writer_see_one_state(tmp_path):
    run_beside_a_writer(tmp_path, 40)


@pytest.mark.slow
def test_five_hundred_read_only_opens_beside_a_writer(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or "") and not os.environ.get("VMEM_SLOW"):
        pytest.skip("500 opens beside a writer: run with -m slow (or VMEM_SLOW=1)")
    run_beside_a_writer(tmp_path, 500)
