"""A scriptable OpenAI-compatible chat-completions server on loopback, for tests.

Usage::

    from fake_openai_server import FakeOpenAIServer, Reply

    with FakeOpenAIServer() as server:
        server.push(Reply.rate_limit(retry_after=0.01), Reply.tool_calls(("send_message", {"message": "hi"})))
        driver = OpenAIDriver("fake-model", base_url=server.base_url)
        ...
        assert len(server.requests) == 2
        assert server.requests[-1].messages[0]["role"] == "system"

Each POST to ``/v1/chat/completions`` takes the next :class:`Reply` from the queue
(:meth:`FakeOpenAIServer.push`); when the queue is empty it asks ``server.handler``
(a callable ``RecordedRequest -> Reply``) if one is set, else answers 400 "script exhausted"
(not retryable, so a test that under-scripts fails fast and clearly).  Every request is
recorded, including ones the client gave up on.  ``GET /v1/models`` lists the model.

Replies: :meth:`Reply.text`, :meth:`Reply.tool_calls`, :meth:`Reply.error`,
:meth:`Reply.rate_limit`, :meth:`Reply.server_error`, :meth:`Reply.context_overflow`,
:meth:`Reply.tools_unsupported`, :meth:`Reply.raw`; ``reply.after(seconds)`` delays any of
them (to outlast a client timeout; stopping the server cuts the delay short).
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Mapping

__all__ = ["FakeOpenAIServer", "RecordedRequest", "Reply"]

_OVERFLOW_BODIES: dict[str, dict[str, Any]] = {
    # OpenAI: nested "error" object with a machine-readable code.
    "openai": {
        "error": {
            "message": "This model's maximum context length is 8192 tokens. However, your "
            "messages resulted in 9120 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    # vLLM: a flat error object, numeric code.
    "vllm": {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested "
        "5000 tokens (4000 in the messages, 1000 in the completion). Please reduce the length "
        "of the messages or completion.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    },
    # llama.cpp server.
    "llamacpp": {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    },
    # Anthropic-style wording, as relayed by some gateways.
    "prompt_too_long": {
        "error": {"message": "prompt is too long: 210000 tokens > 200000 maximum", "type": "invalid_request_error"}
    },
}

_TOOLS_UNSUPPORTED_BODIES: dict[str, tuple[int, dict[str, Any]]] = {
    "ollama": (400, {"error": {"message": "registry.ollama.ai/library/gemma:2b does not support tools", "type": "api_error"}}),
    "llamacpp": (500, {"error": {"code": 500, "message": "tools param requires --jinja flag", "type": "server_error"}}),
    "vllm": (
        400,
        {
            "object": "error",
            "message": '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set',
            "type": "BadRequestError",
            "code": 400,
        },
    ),
}


@dataclass(frozen=True)
class Reply:
    """One scripted HTTP answer.  Build with the class methods; ``body`` is JSON-encoded
    unless it is bytes."""

    status: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0

    def after(self, seconds: float) -> Reply:
        """This reply, sent only after ``seconds`` (e.g. to outlast a client timeout)."""
        return replace(self, delay=seconds)

    @staticmethod
    def _completion(message: dict[str, Any], finish_reason: str, usage: tuple[int, int] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "fake-model",
            "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        }
        if usage is not None:
            body["usage"] = {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}
        return body

    @classmethod
    def text(cls, content: str | None, *, usage: tuple[int, int] | None = (10, 5), finish_reason: str = "stop") -> Reply:
        """A plain assistant message (also how a model without native tools answers)."""
        return cls(200, cls._completion({"role": "assistant", "content": content}, finish_reason, usage))

    @classmethod
    def tool_calls(
        cls,
        *calls: tuple[str, Any] | tuple[str, Any, str],
        content: str | None = None,
        usage: tuple[int, int] | None = (10, 5),
        finish_reason: str = "tool_calls",
    ) -> Reply:
        """Native tool calls: each ``(name, arguments)`` or ``(name, arguments, id)``;
        a dict argument is JSON-encoded, a str is sent verbatim (to send malformed JSON)."""
        items = []
        for k, call in enumerate(calls):
            name, args = call[0], call[1]
            call_id = call[2] if len(call) > 2 else f"call_fake_{k}"  # type: ignore[misc]
            raw = args if isinstance(args, str) else json.dumps(args)
            items.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": raw}})
        message = {"role": "assistant", "content": content, "tool_calls": items}
        return cls(200, cls._completion(message, finish_reason, usage))

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """An OpenAI-style error body ``{"error": {message, type, code}}``."""
        return cls(status, {"error": {"message": message, "type": type, "param": None, "code": code}}, dict(headers or {}))

    @classmethod
    def rate_limit(cls, retry_after: float | str | None = None, *, retry_after_ms: float | None = None) -> Reply:
        """429, optionally with ``Retry-After`` (seconds or an HTTP date) / ``retry-after-ms``."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(retry_after_ms)
        return cls.error(429, "Rate limit reached for requests", type="requests", code="rate_limit_exceeded", headers=headers)

    @classmethod
    def server_error(cls, status: int = 500) -> Reply:
        """A 5xx answer."""
        return cls.error(status, "The server had an error while processing your request.", type="server_error")

    @classmethod
    def context_overflow(cls, style: str = "openai") -> Reply:
        """The prompt-too-long rejection as worded by ``style``: "openai", "vllm",
        "llamacpp" or "prompt_too_long"."""
        return cls(400, _OVERFLOW_BODIES[style])

    @classmethod
    def tools_unsupported(cls, style: str = "ollama") -> Reply:
        """A server rejecting the ``tools`` parameter: "ollama", "llamacpp" or "vllm"."""
        status, body = _TOOLS_UNSUPPORTED_BODIES[style]
        return cls(status, body)

    @classmethod
    def raw(cls, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        """Arbitrary bytes (e.g. a body that is not JSON)."""
        return cls(status, body, dict(headers or {}))


@dataclass
class RecordedRequest:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # decoded JSON, or None

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The request's ``messages``."""
        return list((self.body or {}).get("messages") or [])

    @property
    def tools(self) -> list[dict[str, Any]] | None:
        """The request's ``tools`` (None when absent)."""
        return (self.body or {}).get("tools")


class _Handler(BaseHTTPRequestHandler):
    server: _HTTPServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def _send(self, reply: Reply) -> None:
        if reply.delay > 0 and self.server.fake._stopping.wait(reply.delay):
            return  # server stopping: drop the connection
        payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in reply.headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (timeout): nothing to do

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw) if raw else None
        except ValueError:
            return None

    def do_GET(self) -> None:  # noqa: N802
        fake = self.server.fake
        fake._record(RecordedRequest("GET", self.path, {k.lower(): v for k, v in self.headers.items()}, None))
        if self.path.rstrip("/").endswith("/models"):
            self._send(Reply(200, {"object": "list", "data": [{"id": fake.model, "object": "model", "owned_by": "fake"}]}))
        else:
            self._send(Reply.error(404, f"no route {self.path}"))

    def do_POST(self) -> None:  # noqa: N802
        fake = self.server.fake
        req = RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, self._read_body())
        fake._record(req)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send(Reply.error(404, f"no route {self.path}"))
            return
        if isinstance(req.body, dict) and req.body.get("stream"):
            self._send(Reply.error(400, "fake server: streaming is not supported"))
            return
        self._send(fake._next_reply(req))


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: FakeOpenAIServer


class FakeOpenAIServer:
    """An OpenAI-compatible server on 127.0.0.1 (a free port), run in a background thread.

    Attributes:
        requests: every request received, in order.
        handler: answers chat requests when the queue is empty (None: 400 "script exhausted").
        model: the model id reported by ``/v1/models``.
    """

    def __init__(self, *, model: str = "fake-model", handler: Callable[[RecordedRequest], Reply] | None = None) -> None:
        self.model = model
        self.handler = handler
        self.requests: list[RecordedRequest] = []
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1`` (the server must be started)."""
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer: not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        """The recorded POSTs to ``/chat/completions`` only."""
        with self._lock:
            return [r for r in self.requests if r.method == "POST" and r.path.rstrip("/").endswith("/chat/completions")]

    def push(self, *replies: Reply) -> None:
        """Queue replies for the next chat requests, first in first out."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """How many queued replies are still unused."""
        with self._lock:
            return len(self._queue)

    def reset(self) -> None:
        """Forget recorded requests and queued replies."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _next_reply(self, req: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.handler is not None:
            return self.handler(req)
        return Reply.error(400, "fake server: script exhausted (no reply queued for this request)", code="script_exhausted")

    def start(self) -> FakeOpenAIServer:
        """Bind a free loopback port and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", 0), _Handler)
        httpd.fake = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="fake-openai")
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; delayed replies are abandoned."""
        if self._httpd is None:
            return
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
