"""vmem mcp: an agent's memory served over MCP, tried with the official ``mcp`` client.

Each test starts ``vmem mcp`` as a subprocess (stdio, or streamable HTTP on loopback) and
talks to it as an MCP client application would.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import anyio
import pytest

mcp = pytest.importorskip("mcp", reason="the mcp package (a vmem dependency) is not installed")
from mcp import Client, MCPError, StdioServerParameters  # noqa: E402

from vmem.kernel import Memory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # seconds for a whole session; a hung server fails the test instead of the suite


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    Memory.create(path, system="You are Ana's assistant.",
                  blocks={"human": {"value": "Name: Ana", "limit": 200, "description": "facts about the user"},
                          "persona": {"value": "I am kind.", "read_only": True},
                          "notes/work": ""}).close()
    return path


def server(path: Path, *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "vmem.app.cli", "mcp", str(path), *args],
                                 env={"PYTHONPATH": str(ROOT)}, cwd=str(ROOT))


def run(session) -> None:
    async def bounded() -> None:
        with anyio.fail_after(TIMEOUT):
            await session()

    anyio.run(bounded)


def text(result) -> str:
    return result.content[0].text


def test_a_client_session_lists_inserts_searches_edits_and_reads_back(agent_dir):
    async def session() -> None:
        async with Client(server(agent_dir)) as client:
            assert "vmem://blocks/LABEL" in (client.instructions or "")
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"core_memory_append", "core_memory_replace", "memory_insert", "memory_rethink",
                                  "archival_memory_insert", "archival_memory_update", "archival_memory_search",
                                  "conversation_search"}
            schema = tools["core_memory_append"].input_schema
            assert schema["required"] == ["label", "content"] and "request_heartbeat" not in schema["properties"]
            assert tools["archival_memory_search"].annotations.read_only_hint is True

            r = await client.call_tool("archival_memory_insert", {"content": "Ana's cat Pixel is a grey tabby.",
                                                                  "tags": ["pets"]})
            assert not r.is_error and "saved as 1 passage" in text(r)
            r = await client.call_tool("archival_memory_search", {"query": "what colour is the cat", "tags": ["pets"]})
            assert not r.is_error and "Ana's cat Pixel is a grey tabby." in text(r)  # whole, not a snippet
            # what the OpenAI Agents SDK sends (issue 19): optional fields given empty are not given
            r = await client.call_tool("archival_memory_search", {"query": "grey cat", "tags": [], "tags_match": "any",
                                                                  "start_date": "", "end_date": "", "page": 0})
            assert not r.is_error and "Pixel" in text(r), text(r)

            r = await client.call_tool("core_memory_append", {"label": "human", "content": "Lives in Porto"})
            assert not r.is_error and "now holds" in text(r)
            resources = {x.name: x for x in (await client.list_resources()).resources}
            assert set(resources) == {"human", "persona", "notes/work"}
            assert str(resources["notes/work"].uri) == "vmem://blocks/notes%2Fwork"
            assert "read-only" in resources["persona"].description
            read = await client.read_resource("vmem://blocks/human")
            assert read.contents[0].text == "Name: Ana\nLives in Porto"

            # bad calls: answered as the function errors the agent's LLM would read, nothing changed
            for name, args, fragment in [
                ("core_memory_append", {"label": "human"}, "missing required argument(s) content"),
                ("core_memory_append", {"label": "pets", "content": "x"}, "no core memory block 'pets'"),
                ("core_memory_replace", {"label": "persona", "old_content": "kind", "new_content": "rude"},
                 "read-only"),
                ("core_memory_append", {"label": "human", "content": "x" * 500}, "exceeds its limit"),
                ("archival_memory_search", {"query": "x", "start_date": "yesterday"}, "YYYY-MM-DD"),
                ("send_message", {"message": "hi"}, "no function 'send_message'"),
            ]:
                r = await client.call_tool(name, args)
                assert r.is_error and fragment in text(r), (name, text(r))
            assert (await client.read_resource("vmem://blocks/human")).contents[0].text == "Name: Ana\nLives in Porto"
            with pytest.raises(MCPError, match="no core memory block 'nope'"):
                await client.read_resource("vmem://blocks/nope")

    run(session)
    with Memory.open(agent_dir, read_only=True) as memory:
        memory.check()
        assert memory.block("human").value == "Name: Ana\nLives in Porto"
        events = [e for e in memory.store.events if e.get("e") == "mcp"]
        assert len(events) == 4 + 5 and [e["ok"] for e in events[:4]] == [True, True, True, True]
        assert len(memory.queue) == 0  # MCP calls are not part of the conversation


def test_two_clients_see_each_others_writes(agent_dir):
    async def session() -> None:
        async with Client(server(agent_dir, "--hold", "0.2")) as a, Client(server(agent_dir, "--hold", "0.2")) as b:
            await a.call_tool("core_memory_append", {"label": "notes/work", "content": "from A"})
            assert (await b.read_resource("vmem://blocks/notes%2Fwork")).contents[0].text == "from A"
            await b.call_tool("core_memory_replace", {"label": "notes/work", "old_content": "from A",
                                                      "new_content": "from B"})
            assert (await a.read_resource("vmem://blocks/notes%2Fwork")).contents[0].text == "from B"
            await b.call_tool("archival_memory_insert", {"content": "B saved this"})
            assert "B saved this" in text(await a.call_tool("archival_memory_search", {"query": "saved"}))
        async with Client(server(agent_dir)) as c:  # a later client, in turn
            assert (await c.read_resource("vmem://blocks/notes%2Fwork")).contents[0].text == "from B"

    run(session)


def test_a_call_waits_for_the_writer_then_says_the_memory_is_busy(agent_dir):
    async def session() -> None:
        async with Client(server(agent_dir, "--lock-timeout", "0.3")) as client:
            with Memory.open(agent_dir):  # another writer holds the directory (one at a time)
                r = await client.call_tool("core_memory_append", {"label": "human", "content": "x"})
                assert r.is_error and "in use by another writer" in text(r)
                # reading needs no lock: the resource shows the last committed value
                assert (await client.read_resource("vmem://blocks/human")).contents[0].text == "Name: Ana"
            r = await client.call_tool("core_memory_append", {"label": "human", "content": "x"})
            assert not r.is_error

    run(session)


def start_http(agent_dir: Path, *args: str, env: dict | None = None) -> tuple[subprocess.Popen, str, str]:
    proc = subprocess.Popen([sys.executable, "-m", "vmem.app.cli", "mcp", str(agent_dir), "--http", "--port", "0",
                             *args], stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    line = proc.stderr.readline()
    url = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", line)
    assert url, line
    return proc, url.group(1), line


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)
    proc.stderr.close()


def test_streamable_http_on_loopback(agent_dir):
    proc, url, line = start_http(agent_dir)
    try:
        token = (agent_dir / "mcp.token").read_text().strip()
        assert token in line and (agent_dir / "mcp.token").stat().st_mode & 0o777 == 0o600

        async def session() -> None:
            # the client example of the README: the official SDK with the bearer token in a header
            import httpx2
            from mcp.client.streamable_http import streamable_http_client

            http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"})
            async with Client(streamable_http_client(url, http_client=http)) as client:
                r = await client.call_tool("core_memory_append", {"label": "human", "content": "over HTTP"})
                assert not r.is_error
                assert "over HTTP" in (await client.read_resource("vmem://blocks/human")).contents[0].text

        run(session)
    finally:
        stop(proc)


def post(url: str, token: str | None) -> int:
    import urllib.error
    import urllib.request

    body = b'{"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"protocolVersion": "2025-06-18", ' \
           b'"capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}'
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body, headers=headers), timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_http_requires_the_bearer_token_by_default(agent_dir):
    proc, url, line = start_http(agent_dir)
    try:
        token = (agent_dir / "mcp.token").read_text().strip()
        assert post(url, None) == 401 and post(url, "x" * 43) == 401 and post(url, token) == 200
    finally:
        stop(proc)
    proc, url, line = start_http(agent_dir)  # the token is printed once, when it is made
    try:
        assert token not in line and "mcp.token" in line and post(url, token) == 200
    finally:
        stop(proc)
    proc, url, _ = start_http(agent_dir, env={"VMEM_MCP_TOKEN": "a-token-from-the-environment"})
    try:
        assert post(url, token) == 401 and post(url, "a-token-from-the-environment") == 200
    finally:
        stop(proc)
    proc, url, line = start_http(agent_dir, "--no-auth")
    try:
        assert "no authentication" in line and post(url, None) == 200
    finally:
        stop(proc)
    (agent_dir / "mcp.token").chmod(0o644)  # a token others can read is refused
    out = subprocess.run([sys.executable, "-m", "vmem.app.cli", "mcp", str(agent_dir), "--http", "--port", "0"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 1 and "chmod 600" in out.stderr


def test_the_command_refuses_what_it_cannot_serve(tmp_path):
    def vmem(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vmem.app.cli", "mcp", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})

    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("not an agent")
    p = vmem(str(tmp_path / "other"))
    assert p.returncode == 2 and p.stderr.startswith("vmem: error: ") and "holds no vmem agent" in p.stderr
    p = vmem(str(tmp_path), "--http", "--host", "0.0.0.0")
    assert p.returncode == 2 and "invalid choice" in p.stderr


def test_a_new_directory_gets_a_new_memory(tmp_path):
    async def session() -> None:
        async with Client(server(tmp_path / "fresh")) as client:
            names = {r.name for r in (await client.list_resources()).resources}
            assert names == {"persona", "human"}

    run(session)
    assert Memory.exists(tmp_path / "fresh")


def test_the_service_keeps_the_memory_between_calls_then_gives_it_back(agent_dir):
    from vmem.app.mcp_server import MemoryService
    from vmem.storage import StoreLockedError

    service = MemoryService(agent_dir, hold=3600, lock_timeout=0)
    try:
        assert service.call("core_memory_append", {"label": "human", "content": "one"}).ok
        assert service.call("core_memory_append", {"label": "human", "content": "two"}).ok
        with pytest.raises(StoreLockedError):  # held for the next call: one writer at a time
            Memory.open(agent_dir)
        service.release_if_idle()  # not idle long enough: still held
        with pytest.raises(StoreLockedError):
            Memory.open(agent_dir)
        service.hold = 0
        service.release_if_idle()
        with Memory.open(agent_dir) as memory:  # another writer's turn
            assert memory.block("human").value == "Name: Ana\none\ntwo"
            busy = service.call("core_memory_append", {"label": "human", "content": "three"})
            assert not busy.ok and "in use by another writer" in busy.result
    finally:
        service.close()


def test_help():
    p = subprocess.run([sys.executable, "-m", "vmem.app.cli", "mcp", "--help"], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 0 and p.stdout.startswith("usage: vmem mcp") and "Model Context Protocol" in p.stdout


def test_each_call_is_traced_at_its_own_time(agent_dir):
    """Issue 19, item 9: calls at 14:38:49 showed as 14:38:23 in vmem inspect (the time of the
    last event that carried one)."""
    import datetime as dt

    from vmem.app.inspection import collect
    from vmem.app.mcp_server import MemoryService

    times = iter([dt.datetime(2026, 5, 1, 14, 38, 49, tzinfo=dt.timezone.utc),
                  dt.datetime(2026, 5, 1, 14, 41, 2, tzinfo=dt.timezone.utc)])
    service = MemoryService(agent_dir, hold=0, clock=lambda: next(times))
    try:
        assert service.call("core_memory_append", {"label": "human", "content": "one"}).ok
        assert service.call("archival_memory_insert", {"content": "Ana surfs at Carcavelos."}).ok
    finally:
        service.close()
    with Memory.open(agent_dir, read_only=True) as memory:
        view = collect(memory, events=10)
        passage = memory.archival_search("Carcavelos").items[0]
    rows = [(t.time, t.kind) for t in view.trace if t.kind == "mcp"]
    assert rows == [("2026-05-01T14:38:49+00:00", "mcp"), ("2026-05-01T14:41:02+00:00", "mcp")]
    assert passage.timestamp == dt.datetime(2026, 5, 1, 14, 41, 2, tzinfo=dt.timezone.utc)
