"""Every MCP request gets an answer (issue 18, item 8): raw JSON-RPC lines over stdio and raw
POSTs over streamable HTTP, nested deeply, holding lone surrogates or not JSON at all, are each
answered with a JSON-RPC error (with the request's id when it can be read), never silence; and
the server goes on answering normal requests after them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("mcp", reason="the mcp package (a vmem dependency) is not installed")

from vmem.kernel import Memory  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}

INIT = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def call(rid: int, arguments_json: str) -> str:
    """A tools/call request line with ``arguments_json`` spliced in verbatim."""
    return ('{"jsonrpc": "2.0", "id": %d, "method": "tools/call", "params": {"name": "archival_memory_insert", '
            '"arguments": %s}}' % (rid, arguments_json))


HOSTILE = {
    "nested 900": call(11, '{"content": "x", "tags": ' + "[" * 900 + "]" * 900 + "}"),
    "nested 100000": call(12, '{"content": "x", "tags": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "nested 300 in arguments": call(13, '{"content": "x", "tags": ' + "[" * 300 + "]" * 300 + "}"),
    "lone surrogate": call(14, '{"content": "bad \\ud800 text"}'),
    "lone surrogate in the method": '{"jsonrpc": "2.0", "id": 15, "method": "tools/\\udc00call", "params": {}}',
    "not JSON": '{"jsonrpc": "2.0", "id": 16, "method": ',
    "not an object": "[1, 2, 3]",
    "wrong types": '{"jsonrpc": "2.0", "id": 18, "method": "tools/call", "params": {"name": 5, "arguments": []}}',
}


@pytest.fixture
def agent_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agent"
    Memory.create(path, system="s", blocks={"human": ""}).close()
    return path


class Stdio:
    def __init__(self, path: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "vmem.app.cli", "mcp", str(path)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=ROOT, env=ENV)
        self.lines: list[dict] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode("utf-8", "surrogatepass") + b"\n")
        self.proc.stdin.flush()

    def answer(self, rid: object, timeout: float = 15) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.lines:
                if m.get("id") == rid and ("result" in m or "error" in m):
                    self.lines.remove(m)
                    return m
            time.sleep(0.02)
        raise AssertionError(f"no answer to request {rid!r} in {timeout} s (got {self.lines})")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def test_raw_hostile_requests_over_stdio_each_get_an_error(agent_dir):
    server = Stdio(agent_dir)
    try:
        server.send(json.dumps(INIT))
        server.answer(0)
        server.send(json.dumps(INITIALIZED))
        for name, line in HOSTILE.items():
            server.send(line)
            rid = json.loads(line)["id"] if name not in {"nested 100000", "nested 900", "lone surrogate",
                                                         "lone surrogate in the method", "nested 300 in arguments",
                                                         "not JSON", "not an object"} else None
            rid = rid if rid is not None else _id(line)
            got = server.answer(rid)
            if name == "nested 300 in arguments":  # valid JSON-RPC: the tool answers with a function error
                assert got.get("result", {}).get("isError") or "error" in got, (name, got)
            else:
                assert "error" in got and got["error"]["code"] in (-32700, -32600, -32602), (name, got)
            server.send(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}))
            assert "result" in server.answer(99), name  # still serving
    finally:
        server.close()
    with Memory.open(agent_dir) as memory:
        memory.check()


def _id(line: str) -> object:
    m = re.match(r'\{"jsonrpc": "2.0", "id": (\d+)', line)
    return int(m.group(1)) if m else None


def test_raw_hostile_requests_over_http_each_get_an_error(agent_dir):
    proc = subprocess.Popen([sys.executable, "-m", "vmem.app.cli", "mcp", str(agent_dir), "--http", "--port", "0",
                             "--no-auth"], stderr=subprocess.PIPE, text=True, cwd=ROOT, env=ENV)
    try:
        line = proc.stderr.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+/mcp)", line)
        assert url, line
        url = url.group(1)
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": "2025-06-18"}

        def post(body: str, session: str | None = None) -> tuple[int, dict | None, dict]:
            h = dict(headers, **({"Mcp-Session-Id": session} if session else {}))
            req = urllib.request.Request(url, data=body.encode("utf-8", "surrogatepass"), headers=h, method="POST")
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    status, text, rh = r.status, r.read().decode(), dict(r.headers)
            except urllib.error.HTTPError as e:
                status, text, rh = e.code, e.read().decode(), dict(e.headers)
            data = None
            for part in text.splitlines():
                part = part[5:].strip() if part.startswith("data:") else part
                if part.startswith("{"):
                    data = json.loads(part)
            if data is None and text.strip().startswith("{"):
                data = json.loads(text)
            return status, data, rh

        status, data, rh = post(json.dumps(INIT))
        assert status == 200, (status, data)
        session = rh.get("mcp-session-id") or rh.get("Mcp-Session-Id")
        post(json.dumps(INITIALIZED), session)
        for name, body in HOSTILE.items():
            status, data, _ = post(body, session)
            assert data is not None, (name, status)  # an answer, never silence
            if name == "nested 300 in arguments":
                assert data.get("result", {}).get("isError") or "error" in data, (name, data)
            else:
                assert "error" in data, (name, status, data)
            status, data, _ = post(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}), session)
            assert data and "result" in data, (name, status, data)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()
