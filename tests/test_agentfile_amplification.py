"""Agent files cannot amplify (issue 18, item 11): the bytes an import writes are bounded by
WRITE_FACTOR times the file's size (a block shared by many agents is stored once, in the
import's shared block store, not copied 60 times; what would still exceed the bound is refused
before anything is written), and reading takes memory proportional to the file (a file
of ``{}`` is refused before it is parsed). Peak memory is measured in a child process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vmem.app.agentfile import AgentFileTooLarge, read_agent_file
from vmem.app.letta_bridge import WRITE_FACTOR, LettaBridgeError, import_agent_file
from vmem.kernel import Memory

ROOT = Path(__file__).resolve().parents[1]


def shared_block_file(tmp_path: Path, agents: int, block_bytes: int) -> Path:
    doc = {"agents": [{"id": f"agent-{i}", "name": f"a{i}", "system": "s", "block_ids": ["block-0"], "tool_ids": [],
                       "messages": [], "in_context_message_ids": [],
                       "llm_config": {"model": "m", "context_window": 1_000_000}} for i in range(agents)],
           "blocks": [{"id": "block-0", "label": "shared", "value": "x" * block_bytes, "limit": block_bytes}],
           "groups": [], "files": [], "sources": [], "mcp_servers": [], "tools": [], "metadata": {}}
    path = tmp_path / "shared.af"
    path.write_text(json.dumps(doc))
    return path


def written(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.exists() else 0


def test_sixty_agents_sharing_one_large_block_store_it_once(tmp_path):
    src = shared_block_file(tmp_path, 60, 200_000)  # 200 kB shared by 60 agents: 24 MB as copies
    res = import_agent_file(src, tmp_path / "out")
    assert written(tmp_path / "out") <= WRITE_FACTOR * src.stat().st_size + (8 << 20) + 60 * (200 << 10)
    assert (tmp_path / "out" / "shared-blocks.db").stat().st_size < 2 * 200_000 + (1 << 20)
    with Memory.open(res.directories["agent-59"], read_only=True) as m:
        assert m.block("shared").value == "x" * 200_000


def test_an_import_that_would_write_too_much_is_refused_before_writing(tmp_path):
    doc = json.loads(shared_block_file(tmp_path, 3, 10).read_text())
    for i, agent in enumerate(doc["agents"]):  # each agent its own large block: no sharing to save it
        agent["block_ids"] = [f"block-{i}"]
    doc["blocks"] = [{"id": f"block-{i}", "label": "own", "value": "y" * 400_000, "limit": 400_000} for i in range(3)]
    src = tmp_path / "own.af"
    src.write_text(json.dumps(doc))
    import vmem.app.letta_bridge as bridge
    old, bridge.WRITE_FACTOR = bridge.WRITE_FACTOR, 1  # the bound, made small enough for a small file
    try:
        with pytest.raises(LettaBridgeError, match="one at a time"):
            import_agent_file(src, tmp_path / "out")
    finally:
        bridge.WRITE_FACTOR = old
    assert written(tmp_path / "out") == 0 and not list(tmp_path.glob(".out.*"))


def test_a_few_agents_sharing_a_block_import_within_the_bound(tmp_path):
    src = shared_block_file(tmp_path, 3, 200_000)
    import_agent_file(src, tmp_path / "out")
    assert written(tmp_path / "out") <= WRITE_FACTOR * src.stat().st_size + (8 << 20)  # SQLite's own pages


PEAK = textwrap.dedent("""
    import resource, sys
    from vmem.app.agentfile import AgentFileError, read_agent_file
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        read_agent_file(sys.argv[1])
        print("READ")
    except AgentFileError as exc:
        print("REFUSED", str(exc)[:200])
    print("PEAK_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base)
""")


def test_a_file_of_empty_objects_is_refused_with_memory_proportional_to_it(tmp_path):
    path = tmp_path / "empty.af"
    n = 4_000_000  # 12 MB of {}
    path.write_text('{"agents": [' + ",".join(["{}"] * n) + "]}")
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert "REFUSED" in out.stdout, out.stdout + out.stderr
    peak = int(out.stdout.split("PEAK_KB")[1]) * 1024
    assert peak <= 4 * path.stat().st_size, f"peak {peak:,} bytes for a {path.stat().st_size:,}-byte file"


def test_real_files_are_far_below_the_density_limit(tmp_path):
    from test_letta_bridge import document
    path = tmp_path / "sam.af"
    path.write_text(json.dumps(document()))
    assert read_agent_file(path).agents
