"""``vmem mcp``: one agent's memory served over the Model Context Protocol.

Interface::

    from vmem.app.mcp_server import MemoryService, build_server, serve_stdio, serve_http
    service = MemoryService("agent-dir")            # the memory's tools, calls and blocks, synchronously
    server = build_server(service)                  # an MCP server (the official ``mcp`` SDK's low-level Server)
    anyio.run(serve_stdio, server, service)         # or serve_http(server, service, port=8765): loopback only

What a client gets:

- tools: the memory functions (core memory edits, archival insert and search, conversation
  search) with the schemas the agent's LLM sees, less ``request_heartbeat`` (an agent-loop
  matter) and ``send_message`` (there is no user to send to). A call runs the agent's own
  function, in a savepoint: a bad call changes nothing and is answered as the same function
  error the LLM would read, as a tool result with ``isError``. Two differences, as the
  caller is not the agent's LLM: search results are not paged into the agent's working set
  (they come back whole), and "now" is the wall clock. Each call is logged in the memory's
  trace (event ``mcp``); it is not added to the conversation.
- resources: each core memory block, ``vmem://blocks/<label>`` (the label URL-quoted),
  as text.

One writer at a time, as the store's lock says: a call opens the memory for writing and the
server keeps it open while calls keep coming (opening loads the archival index: tens of
milliseconds for a small memory, more for a large one), then closes it after ``hold``
seconds without a call. So two servers (two clients) on one directory take turns and each
sees the other's writes; a call waits up to ``lock_timeout`` seconds for another writer (a
running ``vmem chat``, another server holding it) to finish, then answers that the memory
is busy. Resources are read without the lock (a read-only open) when the server does not
hold the memory.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from vmem.kernel import Memory
from vmem.kernel.drivers import ToolCall
from vmem.kernel.drivers.toolcalls import MAX_DEPTH, checked_call, text_too_deep
from vmem.kernel.functions import HEARTBEAT, CallRecord, MemoryFunction, invoke
from vmem.storage import Block, SchemaVersionError, StoreLockedError, display, is_url

__all__ = ["BLOCK_URI", "LOOPBACK", "MESSAGE_DEPTH", "TOKEN_FILE", "BearerAuth", "MemoryService", "http_token",
           "rejection", "block_uri", "build_server", "serve_http", "serve_stdio"]

#: A block's resource URI; ``{label}`` is URL-quoted (labels may hold slashes).
BLOCK_URI = "vmem://blocks/{label}"
#: The hosts ``serve_http`` binds to: this machine only.
LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: Memory functions that make no sense without an agent loop.
NOT_SERVED = frozenset({"send_message"})

_T = TypeVar("_T")

# What a client may assume of each tool (MCP tool annotations are hints for the client).
_READS = {"archival_memory_search", "conversation_search"}
_REWRITES = {"core_memory_replace", "memory_rethink"}


class _Failed(Exception):
    def __init__(self, record: CallRecord) -> None:
        super().__init__(record.result)
        self.record = record


class _ClientHost:
    """The memory as the built-ins see it during an MCP call (a :class:`vmem.kernel.Host`).

    The caller is not the agent's LLM: "now" is the wall clock (not the agent's last turn),
    and search results are not paged into the agent's working set (so every result comes
    back in full, and the agent's context is left as it was)."""

    def __init__(self, memory: Memory, now: _dt.datetime) -> None:
        self._memory = memory
        self.now = now

    def __getattr__(self, name: str) -> Any:
        return getattr(self._memory, name)

    def archival_insert(self, content: str, tags: Sequence[str] = ()) -> list[int]:
        return self._memory.archival_insert(content, tags, timestamp=self.now)

    def supersede(self, old_ids: Sequence[int], by: int | None = None, *,
                  at: _dt.datetime | None = None) -> list[int]:
        return self._memory.supersede(old_ids, by, at=at or self.now)

    def page_in(self, hits: Sequence[tuple[int, float, str]]) -> set[int]:
        return set()


class MemoryService:
    """The memory in ``path`` as an MCP server uses it: tool schemas, calls, blocks.

    Synchronous; safe to call from several threads (one request at a time). A call opens
    the memory for writing, waiting up to ``lock_timeout`` seconds for another writer, and
    keeps it open while calls keep coming: :meth:`release_if_idle` closes it once ``hold``
    seconds pass without one (0: close after every call), so other writers get their turn.
    """

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 10.0, hold: float = 2.0,
                 embedder: Any = None, clock: Callable[[], _dt.datetime] | None = None) -> None:
        self.path = path if is_url(path) else Path(path)
        self.clock = clock or (lambda: _dt.datetime.now(_dt.timezone.utc))  #: "now" for each call
        self.lock_timeout = lock_timeout
        self.hold = hold
        self.embedder = embedder
        self._lock = threading.RLock()
        self._memory: Memory | None = None  # open for writing while calls keep coming
        self._used = 0.0
        try:
            reader = Memory.open(self.path, read_only=True, embedder=embedder)
        except SchemaVersionError:  # an older vmem wrote it: one open for writing upgrades it (a newer: its error)
            self._writer()
            self._release()
            reader = Memory.open(self.path, read_only=True, embedder=embedder)
        with reader as memory:
            self.functions: dict[str, MemoryFunction] = {
                name: f for name, f in memory.functions.items() if name not in NOT_SERVED}

    # ------------------------------------------------------------ tools

    def tools(self) -> list[dict[str, Any]]:
        """``{"name", "description", "input_schema", "annotations"}`` per served memory function."""
        out = []
        for name, f in self.functions.items():
            params = dict(f.schema["parameters"])
            params["properties"] = {k: v for k, v in params["properties"].items() if k != HEARTBEAT}
            params["required"] = [r for r in params.get("required", []) if r != HEARTBEAT]
            out.append({"name": name, "description": f.schema["description"], "input_schema": params,
                        "annotations": {"read_only_hint": name in _READS, "destructive_hint": name in _REWRITES,
                                        "idempotent_hint": name in _READS, "open_world_hint": False}})
        return out

    def call(self, name: str, arguments: dict[str, Any] | None) -> CallRecord:
        """Run one memory function; never raises for a bad call (the record says what failed)."""
        cid = f"mcp-{time.time_ns()}"
        if arguments is not None and not isinstance(arguments, dict):
            return invoke(self.functions, None, ToolCall(cid, name, None, error="the arguments must be a JSON object"))
        call = checked_call(ToolCall(cid, name, {k: v for k, v in (arguments or {}).items() if k != HEARTBEAT}))
        if call.arguments is None:  # nested too deep, or not JSON: the function error the LLM would read
            return invoke(self.functions, None, call)
        if name not in self.functions:
            return invoke(self.functions, None, call)  # the agent's own "no function ..." answer
        with self._lock:
            try:
                memory = self._writer()
            except StoreLockedError:
                message = (f"the memory in {self.path} is in use by another writer (one at a time); waited "
                           f"{self.lock_timeout:g} s: try again when it is free")
                return CallRecord(name, arguments, False, json.dumps({"status": "Failed", "message": message}))
            try:
                now = self.clock()
                with memory.transaction():
                    try:
                        with memory.savepoint():  # a failed call leaves nothing behind
                            record = invoke(self.functions, _ClientHost(memory, now), call)
                            if not record.ok:
                                raise _Failed(record)
                    except _Failed as failed:
                        record = failed.record
                    memory.log({"e": "mcp", "time": now.timestamp(), "name": name, "arguments": call.arguments,
                                "ok": record.ok, "result": record.result})
            except StoreLockedError:  # a PostgreSQL agent: another worker held it beyond the wait
                self._release()
                message = (f"the memory in {self.path} is in use by another writer (one at a time): try again "
                           f"when it is free")
                return CallRecord(name, arguments, False, json.dumps({"status": "Failed", "message": message}))
            except BaseException:
                self._release()  # whatever broke, the next call starts from the directory
                raise
            self._used = time.monotonic()
            if self.hold <= 0:
                self._release()
            return record

    def _writer(self) -> Memory:
        """The memory open for writing, waiting for the lock up to lock_timeout (StoreLockedError)."""
        if self._memory is not None:
            return self._memory
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                self._memory = Memory.open(self.path, embedder=self.embedder)
                return self._memory
            except StoreLockedError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    def release_if_idle(self) -> None:
        """Close the memory if no call came for ``hold`` seconds (another writer may take it)."""
        with self._lock:
            if self._memory is not None and time.monotonic() - self._used >= self.hold:
                self._release()

    def close(self) -> None:
        """Close the memory if it is open."""
        with self._lock:
            self._release()

    def _release(self) -> None:
        memory, self._memory = self._memory, None
        if memory is not None:
            memory.close()

    # ------------------------------------------------------------ blocks

    def blocks(self) -> list[Block]:
        """The core memory blocks, as committed now (a read-only open when not holding the memory)."""
        with self._lock:
            if self._memory is not None:
                return self._memory.blocks()
        with Memory.open(self.path, read_only=True, embedder=self.embedder) as memory:
            return memory.blocks()

    def block(self, uri: str) -> Block:
        """The block a resource URI names (KeyError with the reason if none)."""
        prefix = BLOCK_URI.split("{", 1)[0]
        if not uri.startswith(prefix):
            raise KeyError(f"unknown resource {uri!r}: blocks are {BLOCK_URI}")
        label = urllib.parse.unquote(uri[len(prefix):])
        blocks = {b.label: b for b in self.blocks()}
        if label not in blocks:
            raise KeyError(f"no core memory block {label!r}; blocks: {', '.join(blocks) or 'none'}")
        return blocks[label]


def block_uri(label: str) -> str:
    """The resource URI of the block called ``label``."""
    return BLOCK_URI.format(label=urllib.parse.quote(label, safe=""))


def _message(record: CallRecord) -> str:
    try:
        return str(json.loads(record.result)["message"])
    except (ValueError, KeyError, TypeError):
        return record.result


def build_server(service: MemoryService) -> Any:
    """An MCP server (``mcp.server.lowlevel.Server``) over ``service``."""
    import anyio
    import mcp.types as types
    from mcp import MCPError
    from mcp.server.lowlevel import Server

    from vmem import __version__

    async def in_thread(fn: Callable[[], _T]) -> _T:
        return await anyio.to_thread.run_sync(fn)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        return types.ListToolsResult(tools=[
            types.Tool(name=t["name"], description=t["description"], input_schema=t["input_schema"],
                       annotations=types.ToolAnnotations(**t["annotations"])) for t in service.tools()])

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        record = await in_thread(lambda: service.call(params.name, params.arguments))
        return types.CallToolResult(content=[types.TextContent(type="text", text=_message(record))],
                                    is_error=not record.ok)

    async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
        blocks = await in_thread(service.blocks)
        return types.ListResourcesResult(resources=[
            types.Resource(uri=block_uri(b.label), name=b.label, mime_type="text/plain", size=len(b.value.encode()),
                           description=(f"{b.description + ' · ' if b.description else ''}core memory block, "
                                        f"{len(b.value)}/{b.limit} characters{', read-only' if b.read_only else ''}"))
            for b in blocks])

    async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
        uri = str(params.uri)
        try:
            b = await in_thread(lambda: service.block(uri))
        except KeyError as exc:
            raise MCPError(types.INVALID_PARAMS, str(exc.args[0]), {"uri": uri}) from None
        return types.ReadResourceResult(contents=[types.TextResourceContents(uri=uri, mime_type="text/plain",
                                                                             text=b.value)])

    name = display(service.path) if is_url(service.path) else Path(service.path).name
    instructions = (
        f"The memory of one vmem agent ({name}): core memory blocks (small, labelled, always worth "
        "reading: the resources vmem://blocks/LABEL), archival memory (long-term passages: archival_memory_insert, "
        "archival_memory_search) and the conversation history (conversation_search). Edit a block with "
        "core_memory_append, core_memory_replace, memory_insert or memory_rethink. A failed call changes nothing.")
    return Server("vmem", version=__version__, title=f"vmem memory: {name}", instructions=instructions,
                  on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
                  on_read_resource=read_resource)


async def _releasing(service: MemoryService) -> None:
    """Give the memory back to other writers once the service has been idle for its hold time."""
    import anyio

    while True:
        await anyio.sleep(max(0.05, min(service.hold / 2, 0.5)))
        await anyio.to_thread.run_sync(service.release_if_idle)


#: Deepest nesting of a JSON-RPC message the server reads: the tool arguments' limit and the envelope.
MESSAGE_DEPTH = MAX_DEPTH + 8
_ID = re.compile(r'"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,18})')


def rejection(line: str) -> Any:
    """The JSON-RPC error answering a message line the SDK's reader would drop without a word
    (it logs the failure and answers nothing: the client waits for its timeout): a line that is
    not JSON, nested deeper than :data:`MESSAGE_DEPTH`, holding a lone surrogate, or not a
    JSON-RPC message. None for a line the SDK takes. The request's id is kept when it can be read."""
    import mcp.types as types

    if not line.strip():
        return None
    deep = text_too_deep(line, MESSAGE_DEPTH)
    if not deep:
        try:
            types.jsonrpc_message_adapter.validate_json(line, by_name=False)
            return None
        except Exception as exc:  # noqa: BLE001 - any failure is the client's to hear about
            failure = str(exc).strip().splitlines()
            why = "; ".join(failure[:3])[:300]
    parsed: Any = None
    if not deep:
        try:
            parsed = json.loads(line)
        except (ValueError, RecursionError):
            parsed = None
    rid = parsed.get("id") if isinstance(parsed, dict) else None
    if rid is None:
        m = _ID.search(line[:4096])
        if m:
            try:
                rid = json.loads(m.group(1))
            except ValueError:
                rid = None
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        rid = None
    elif isinstance(rid, str):
        rid = rid.encode("utf-8", "replace").decode("utf-8")
    if deep:
        code, message = types.INVALID_REQUEST, f"the message is nested more than {MESSAGE_DEPTH} levels deep"
    elif parsed is None:
        code, message = types.PARSE_ERROR, f"the message is not JSON: {why}"
    else:
        code, message = types.INVALID_REQUEST, f"not a valid JSON-RPC message (or not valid Unicode): {why}"
    return types.JSONRPCError(jsonrpc="2.0", id=rid, error=types.ErrorData(code=code, message=message))


class _CheckedLines:
    """stdin's lines as the SDK's reader takes them: a line it would drop is answered here with
    :func:`rejection`'s error (sent on ``errors``) and not passed on."""

    def __init__(self, lines: Any, errors: Any) -> None:
        self._lines = lines
        self._errors = errors

    def __aiter__(self) -> Any:
        return self._checked()

    async def _checked(self) -> Any:
        async for line in self._lines:
            error = rejection(line)
            if error is None:
                yield line
            else:
                await self._errors.send(error)


async def serve_stdio(server: Any, service: MemoryService) -> None:
    """Serve one client over this process's stdin and stdout (until stdin closes). Every request
    gets an answer: a line the SDK cannot read is answered with a JSON-RPC error."""
    import io
    import sys

    import anyio
    from mcp.server.stdio import stdio_server
    from mcp.shared.message import SessionMessage

    errors_in, errors_out = anyio.create_memory_object_stream[Any](16)
    stdin = _CheckedLines(anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="replace",
                                                          newline=None)), errors_in)

    async def answer_errors(write: Any) -> None:
        async with errors_out:
            async for error in errors_out:
                await write.send(SessionMessage(error))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(_releasing, service)
            async with stdio_server(stdin=stdin) as (read, write):  # type: ignore[arg-type]
                tg.start_soon(answer_errors, write)
                await server.run(read, write, server.create_initialization_options())
            tg.cancel_scope.cancel()
    finally:
        service.close()


#: The file in an agent's directory holding the HTTP server's bearer token (mode 0600).
TOKEN_FILE = "mcp.token"


def http_token(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """The bearer token of the memory in ``path`` for ``vmem mcp --http``: read from its
    :data:`TOKEN_FILE`, or generated (256 random bits) and stored there with mode 0600 on
    first use. Returns ``(token, generated)``. ValueError if the file is readable by others."""
    import secrets
    import stat

    file = Path(path) / TOKEN_FILE
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        st = os.stat(file, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise ValueError(f"{file} must be a regular file only its owner can read (chmod 600 {file})") from None
        token = file.read_text(encoding="ascii").strip()
        if len(token) < 16:
            raise ValueError(f"{file} holds no usable token (delete it to have a new one generated)") from None
        return token, False
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(token + "\n")
    return token, True


class BearerAuth:
    """ASGI middleware: an HTTP request without ``Authorization: Bearer <token>`` gets 401 (and
    a JSON-RPC error body); the token is compared in constant time."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self._token = token.encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import hmac

        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not (got[:7].lower() == b"bearer " and hmac.compare_digest(got[7:].strip(), self._token)):
                body = json.dumps({"jsonrpc": "2.0", "id": None, "error": {
                    "code": -32001, "message": "unauthorized: send the header Authorization: Bearer <token> "
                    f"(the token is in the agent directory's {TOKEN_FILE})"}}).encode()
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
                                        (b"www-authenticate", b'Bearer realm="vmem"')]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


async def serve_http(server: Any, service: MemoryService, *, host: str = "127.0.0.1", port: int = 0,
                     ready: Callable[[str], None] | None = None, token: str | None = None) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` on the loopback interface only
    (``port`` 0: any free port). ``ready`` is called with the URL once it listens. ``token``:
    every request must carry ``Authorization: Bearer <token>`` (:class:`BearerAuth`); None
    serves without authentication (any local process could then read and write the memory)."""
    import anyio
    import uvicorn

    if host not in LOOPBACK:
        raise ValueError(f"vmem mcp serves this machine only: host must be one of {', '.join(LOOPBACK)}, not {host!r}")
    family = socket.AF_INET6 if host == "::1" else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1" if host == "localhost" else host, port))
    port = sock.getsockname()[1]
    app = server.streamable_http_app(host=host)
    web = uvicorn.Server(uvicorn.Config(BearerAuth(app, token) if token else app, log_level="warning", lifespan="on"))
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"

    async def announce() -> None:
        while not web.started:
            await anyio.sleep(0.02)
        if ready is not None:
            ready(url)

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(announce)
            tg.start_soon(_releasing, service)
            await web.serve(sockets=[sock])
            tg.cancel_scope.cancel()
    finally:
        service.close()
