"""OpenAIDriver: any server that speaks ``POST /v1/chat/completions``.

OpenAI itself, vLLM, llama.cpp's server, Ollama, LM Studio, ... through the ``openai``
package's ``OpenAI`` / ``AsyncOpenAI`` clients.

Tool modes
----------
``native``  tools are sent as ``tools=``; calls come back in ``message.tool_calls``.
``json``    tools are *not* sent; the system prompt teaches the JSON-in-text protocol of
            :mod:`vmem.kernel.drivers.toolcalls`, the history's tool calls and results are
            rewritten as text, and calls are parsed out of the completion text.
``auto``    (default) native first.  If the server rejects ``tools`` (Ollama "does not
            support tools", llama.cpp "tools param requires --jinja", vLLM "tool choice
            requires --enable-auto-tool-choice") the driver switches to ``json`` for good and
            re-sends at once.  A native answer with no tool calls whose text holds JSON calls
            to tools that were offered is parsed as in ``json`` mode.

Errors and retries
------------------
The client's own retries are disabled (``max_retries=0``): this driver retries, so the
policy is in one place and observable (``on_retry``).  Retried, with exponential backoff and
jitter, bounded by :attr:`RetryPolicy.max_attempts`: 408, 409, 429 (except
``insufficient_quota``), 5xx, and connection errors; timeouts only if
``RetryPolicy.retry_timeouts``.  A ``retry-after-ms`` / ``Retry-After`` header (seconds or
HTTP date) is honoured as the delay; one longer than ``RetryPolicy.max_retry_after`` ends the
retries at once.  A prompt-too-long rejection (code ``context_length_exceeded``, or the
wording of OpenAI, vLLM, llama.cpp, LM Studio, Anthropic-style gateways), or an HTTP 413
(request too large), raises
:class:`ContextOverflowError` without retrying; a timeout raises :class:`DriverTimeoutError`;
everything else :class:`DriverError`.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import random
import re
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Literal, Mapping, Sequence

import openai

from .base import (
    Completion,
    ContextOverflowError,
    Driver,
    DriverError,
    DriverTimeoutError,
    Message,
    Tool,
    ToolCall,
    Usage,
)
from .lenient_json import parse_arguments
from .toolcalls import new_call_id, parse_text_tool_calls, to_text_protocol

__all__ = [
    "OpenAIDriver", "RetryEvent", "RetryPolicy", "ToolMode", "is_context_overflow", "merge_system_messages",
    "parse_retry_after",
]

ToolMode = Literal["native", "json", "auto"]

NO_KEY = "sk-no-key-required"
"""The API key sent to servers that need none (local servers ignore it)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How :class:`OpenAIDriver` retries transient failures.

    The delay before retry *k* (k = 1, 2, ...) is
    ``min(max_delay, base_delay * multiplier**(k-1))``, of which a random fraction up to
    ``jitter`` is taken off (so concurrent clients spread out), unless the server named a
    delay with ``Retry-After``: then that delay, exactly.
    """

    max_attempts: int = 4
    """Requests sent at most, the first included (1 = never retry)."""
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 20.0
    jitter: float = 0.5
    """Fraction of each backoff delay that is randomised away, in [0, 1]."""
    max_retry_after: float = 60.0
    """A server asking to wait longer than this (seconds) ends the retries at once."""
    retry_timeouts: bool = False
    """Retry requests that timed out.  Off by default: a timeout has already spent the
    whole time budget, and an LLM call that timed out once usually times out again."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("RetryPolicy.max_attempts must be at least 1")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("RetryPolicy.jitter must be in [0, 1]")
        if self.base_delay < 0 or self.max_delay < 0 or self.max_retry_after < 0:
            raise ValueError("RetryPolicy delays must be non-negative")

    def backoff(self, retry: int, rng: random.Random) -> float:
        """The jittered delay before retry number ``retry`` (1-based)."""
        delay = min(self.max_delay, self.base_delay * self.multiplier ** (retry - 1))
        return delay * (1.0 - self.jitter * rng.random())


@dataclass(frozen=True)
class RetryEvent:
    """Passed to ``on_retry`` before the driver sleeps and retries.

    Attributes:
        attempt: the attempt that just failed (1-based).
        delay: seconds the driver will wait before the next attempt.
        status: HTTP status of the failure, or None for a connection error/timeout.
        reason: a short description of the failure.
        retry_after: the delay the server asked for, when it did.
    """

    attempt: int
    delay: float
    status: int | None
    reason: str
    retry_after: float | None


# --------------------------------------------------------------------------- classification

_OVERFLOW = re.compile(
    r"context[_ ]length[_ ]exceeded|maximum context length|prompt is too long|context window"
    r"|exceeds? the available context size|exceed_context_size|context size has been exceeded"
    r"|greater than the context length|input is too long for the model"
    r"|reduce the length of the (?:messages|prompt|input)",
    re.IGNORECASE,
)
_TOOLS_UNSUPPORTED = re.compile(
    r"does not support tools|tools param requires|tool choice requires"
    r"|tools? (?:are|is) not supported|does not support (?:function|tool) call"
    r"|(?:function|tool) calling is not (?:supported|enabled)",
    re.IGNORECASE,
)
_RETRY_STATUS = frozenset({408, 409, 429})


def _error_fields(exc: openai.APIStatusError) -> tuple[str, str, str, str]:
    """(detail, search text, code, type) of a status error.  ``detail`` is the provider's
    own message (or the client's summary); the search text joins every message found."""
    body = exc.body if isinstance(exc.body, dict) else {}
    message = body.get("message") if isinstance(body.get("message"), str) else None
    raw = exc.body if isinstance(exc.body, str) else None
    detail = message or raw or exc.message
    text = " ".join(x for x in (exc.message, message, raw) if x)
    return detail, text, str(body.get("code") or exc.code or ""), str(body.get("type") or exc.type or "")


def is_context_overflow(exc: BaseException) -> bool:
    """Whether a client exception is the provider saying the prompt is too long."""
    if not isinstance(exc, openai.APIStatusError) or exc.status_code == 429:
        return False
    if exc.status_code == 413:  # request body too large: shrinking the context is the remedy
        return True
    _, text, code, kind = _error_fields(exc)
    return code == "context_length_exceeded" or kind == "exceed_context_size_error" or bool(_OVERFLOW.search(text))


def _tools_unsupported(exc: openai.APIStatusError) -> bool:
    return exc.status_code != 429 and bool(_TOOLS_UNSUPPORTED.search(_error_fields(exc)[1]))


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or an HTTP
    date), or None when absent or unreadable.  ``now`` is for tests."""
    lower = {k.lower(): v for k, v in headers.items()}
    ms = lower.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000.0
            if value >= 0 and value == value and value != float("inf"):
                return value
        except ValueError:
            pass
    ra = lower.get("retry-after")
    if ra is None:
        return None
    try:
        value = float(ra)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(ra)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return max(0.0, (when - (now or datetime.now(timezone.utc))).total_seconds())
    if value < 0 or value != value or value == float("inf"):
        return None
    return value


# --------------------------------------------------------------------------- the driver


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def merge_system_messages(messages: Sequence[Message]) -> list[Message]:
    """The leading system messages joined (blank line between) into one; a system message after
    the newest user message moved to just before it, so the request ends with the user's turn.
    Everything else keeps its order. The input is not modified."""
    lead = 0
    while lead < len(messages) and messages[lead].get("role") == "system":
        lead += 1
    head = [{"role": "system", "content": "\n\n".join(str(m.get("content") or "") for m in messages[:lead])}]
    rest = list(messages[lead:])
    users = [i for i, m in enumerate(rest) if m.get("role") == "user"]
    if users:
        u = users[-1]
        tail = rest[u + 1:]
        rest = (rest[:u] + [m for m in tail if m.get("role") == "system"] + [rest[u]]
                + [m for m in tail if m.get("role") != "system"])
    return (head if lead else []) + rest


class _SwitchToJson(Exception):
    """Internal: the server rejected native tools; re-send in json mode."""


class OpenAIDriver(Driver):
    """A driver for OpenAI-compatible chat-completions servers.

    Args:
        model: the model name; default ``$VMEM_MODEL``.
        base_url: default ``$VMEM_BASE_URL``, then ``$OPENAI_BASE_URL``, then OpenAI's.
        api_key: default ``$VMEM_API_KEY``, then ``$OPENAI_API_KEY``; for a server other
            than api.openai.com a placeholder is sent when there is none.
        tool_mode: "native", "json" or "auto" (default ``$VMEM_TOOL_MODE`` or "auto"),
            see the module docstring.
        timeout: seconds before a request is abandoned (:class:`DriverTimeoutError`).
        retry: the :class:`RetryPolicy`.
        tool_choice: sent as ``tool_choice`` in native mode when there are tools
            (e.g. "required" to force a function call every step).
        params: further keyword arguments for ``chat.completions.create``, e.g.
            ``{"temperature": 0, "max_tokens": 512, "extra_body": {...}}``.
        on_retry: called with a :class:`RetryEvent` before each retry (logging, metrics).
        client / async_client: pre-built ``openai.OpenAI`` / ``openai.AsyncOpenAI`` clients
            to use instead (their retries are turned off in the copies this driver uses).
        default_headers: extra HTTP headers on every request.
        merge_system: send the leading system messages (instructions, core memory, summary)
            as one, and the later ones (statistics, working set) just before the newest user
            message, so that the request ends with the user's turn. For chat templates and
            small models that expect that shape (measured: Qwen2.5-0.5B echoes a trailing
            system message instead of answering). The prompt cache then serves the prefix up to
            the latest turn, no longer the latest turn itself.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        tool_mode: ToolMode | None = None,
        timeout: float = 120.0,
        retry: RetryPolicy | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
        default_headers: Mapping[str, str] | None = None,
        merge_system: bool = False,
    ) -> None:
        model = model or os.environ.get("VMEM_MODEL")
        if not model:
            raise ValueError("OpenAIDriver: no model; pass model= or set VMEM_MODEL")
        mode = tool_mode or os.environ.get("VMEM_TOOL_MODE") or "auto"
        if mode not in ("native", "json", "auto"):
            raise ValueError(f"OpenAIDriver: tool_mode must be 'native', 'json' or 'auto', not {mode!r}")
        if timeout <= 0:
            raise ValueError("OpenAIDriver: timeout must be positive")
        given = client if client is not None else async_client
        if given is not None:  # the other client is built to match the one given
            base_url = base_url or str(given.base_url)
            api_key = api_key or given.api_key or None
        base_url = base_url or os.environ.get("VMEM_BASE_URL") or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("VMEM_API_KEY") or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None:
            if base_url is None or "api.openai.com" in base_url:
                raise ValueError(
                    "OpenAIDriver: no API key for api.openai.com; pass api_key= or set OPENAI_API_KEY"
                )
            api_key = NO_KEY
        self.model: str = model
        self.tool_mode: ToolMode = mode  # type: ignore[assignment]
        self.base_url = base_url
        self.timeout = float(timeout)
        self.retry = retry or RetryPolicy()
        self.tool_choice = tool_choice
        self.params: dict[str, Any] = dict(params or {})
        self.on_retry = on_retry
        self.merge_system = bool(merge_system)
        self.fell_back_to_json = False
        """True once an ``auto`` driver has switched to the json protocol."""
        self._api_key = api_key
        self._headers = dict(default_headers or {})
        self._rng = random.Random()
        self._client = client.with_options(max_retries=0) if client is not None else None
        self._given_async = async_client.with_options(max_retries=0) if async_client is not None else None
        self._aclient: openai.AsyncOpenAI | None = None
        self._aclient_loop: weakref.ref[asyncio.AbstractEventLoop] | None = None

    def __repr__(self) -> str:
        return f"OpenAIDriver(model={self.model!r}, base_url={self.base_url!r}, tool_mode={self.tool_mode!r})"

    # ----------------------------------------------------------------- clients

    def _sync_client(self) -> openai.OpenAI:
        if self._client is None:
            self._client = openai.OpenAI(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout,
                max_retries=0, default_headers=self._headers or None,
            )
        return self._client

    def _async_client(self) -> openai.AsyncOpenAI:
        if self._given_async is not None:
            return self._given_async
        # An AsyncOpenAI's connection pool belongs to the event loop that first used it;
        # each loop (e.g. each asyncio.run) gets its own client.
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient_loop is None or self._aclient_loop() is not loop:
            self._aclient = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout,
                max_retries=0, default_headers=self._headers or None,
            )
            self._aclient_loop = weakref.ref(loop)
        return self._aclient

    def close(self) -> None:
        """Close the synchronous client's connections."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close both clients' connections."""
        self.close()
        if self._aclient is not None and self._aclient_loop is not None:
            if self._aclient_loop() is asyncio.get_running_loop():
                await self._aclient.close()
            self._aclient = None
            self._aclient_loop = None

    # ----------------------------------------------------------------- requests

    def _mode(self) -> Literal["native", "json"]:
        if self.tool_mode == "json" or (self.tool_mode == "auto" and self.fell_back_to_json):
            return "json"
        return "native"

    def _request(self, messages: Sequence[Message], tools: Sequence[Tool], mode: str) -> dict[str, Any]:
        req: dict[str, Any] = dict(self.params)
        req["model"] = self.model
        req["timeout"] = self.timeout
        if self.merge_system:
            messages = merge_system_messages(messages)
        if mode == "json":
            req["messages"] = to_text_protocol(messages, tools)
        else:
            req["messages"] = list(messages)
            if tools:
                req["tools"] = list(tools)
                if self.tool_choice is not None:
                    req["tool_choice"] = self.tool_choice
        return req

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """Send the request, retrying transient failures; see the module docstring."""
        failures = 0
        sent = 0
        while True:
            mode = self._mode()
            req = self._request(messages, tools, mode)
            sent += 1
            try:
                resp = self._sync_client().chat.completions.create(**req)
            except (openai.OpenAIError, ValueError) as exc:
                try:
                    failures += 1
                    delay = self._after_failure(exc, failures, sent, mode, bool(tools))
                except _SwitchToJson:
                    failures -= 1
                    continue
                time.sleep(delay)
                continue
            return self._completion(resp, mode, tools, sent)

    async def acomplete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """Asynchronous :meth:`complete` on ``AsyncOpenAI`` (no threads)."""
        failures = 0
        sent = 0
        while True:
            mode = self._mode()
            req = self._request(messages, tools, mode)
            sent += 1
            try:
                resp = await self._async_client().chat.completions.create(**req)
            except (openai.OpenAIError, ValueError) as exc:
                try:
                    failures += 1
                    delay = self._after_failure(exc, failures, sent, mode, bool(tools))
                except _SwitchToJson:
                    failures -= 1
                    continue
                await asyncio.sleep(delay)
                continue
            return self._completion(resp, mode, tools, sent)

    # ----------------------------------------------------------------- failures

    def _after_failure(self, exc: Exception, failures: int, sent: int, mode: str, had_tools: bool) -> float:
        """Decide what a failed request leads to: return the delay before retrying, raise
        _SwitchToJson, or raise the DriverError the caller sees."""
        policy = self.retry
        status: int | None = None
        retry_after: float | None = None
        if isinstance(exc, openai.APITimeoutError):
            if not policy.retry_timeouts or failures >= policy.max_attempts:
                raise DriverTimeoutError(
                    f"{self.model}: no answer within {self.timeout:g}s (attempt {sent})", attempts=sent
                ) from exc
            reason = "timeout"
        elif isinstance(exc, openai.APIConnectionError):
            reason = f"connection error: {exc}"
            if failures >= policy.max_attempts:
                raise DriverError(f"{self.model}: {reason} (gave up after {_attempts(sent)})", attempts=sent) from exc
        elif isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            detail, _, code, kind = _error_fields(exc)
            if is_context_overflow(exc):
                raise ContextOverflowError(
                    f"{self.model}: the prompt exceeds the context window: {detail}", status=status, attempts=sent
                ) from exc
            if self.tool_mode == "auto" and mode == "native" and had_tools and _tools_unsupported(exc):
                self.fell_back_to_json = True
                raise _SwitchToJson from exc
            retryable = status in _RETRY_STATUS or status >= 500
            if status == 429 and "insufficient_quota" in (code, kind):
                retryable = False
            if not retryable:
                raise DriverError(f"{self.model}: HTTP {status}: {detail}", status=status, attempts=sent) from exc
            reason = f"HTTP {status}"
            retry_after = parse_retry_after(exc.response.headers)
            if retry_after is not None and retry_after > policy.max_retry_after:
                raise DriverError(
                    f"{self.model}: HTTP {status}: the server asks to retry after {retry_after:g}s, "
                    f"more than max_retry_after={policy.max_retry_after:g}s: {detail}",
                    status=status, attempts=sent,
                ) from exc
            if failures >= policy.max_attempts:
                raise DriverError(
                    f"{self.model}: HTTP {status} (gave up after {_attempts(sent)}): {detail}",
                    status=status, attempts=sent,
                ) from exc
        elif isinstance(exc, ValueError):  # the client could not decode the response body
            raise DriverError(
                f"{self.model}: the response could not be decoded ({type(exc).__name__}: {exc})", attempts=sent
            ) from exc
        else:
            raise DriverError(f"{self.model}: {type(exc).__name__}: {exc}", attempts=sent) from exc
        delay = retry_after if retry_after is not None else policy.backoff(failures, self._rng)
        if self.on_retry is not None:
            self.on_retry(RetryEvent(attempt=sent, delay=delay, status=status, reason=reason, retry_after=retry_after))
        return delay

    # ----------------------------------------------------------------- responses

    def _completion(self, resp: Any, mode: str, tools: Sequence[Tool], sent: int) -> Completion:
        choices = getattr(resp, "choices", None)
        if not choices:
            raise DriverError(f"{self.model}: the response has no choices", attempts=sent)
        choice = choices[0]
        msg = getattr(choice, "message", None)
        if msg is None:
            raise DriverError(f"{self.model}: the response's choice has no message", attempts=sent)
        text = msg.content if isinstance(getattr(msg, "content", None), str) else None
        calls = [self._native_call(tc) for tc in (getattr(msg, "tool_calls", None) or [])]
        legacy = getattr(msg, "function_call", None)
        if legacy is not None and not calls:
            calls.append(self._from_function(new_call_id(), getattr(legacy, "name", ""), getattr(legacy, "arguments", None)))
        names = {str((t.get("function") or {}).get("name")) for t in tools}
        if mode == "json":
            found = parse_text_tool_calls(text, known=names)
            calls.extend(found.calls)
            text = found.text
        elif self.tool_mode == "auto" and not calls and tools and text:
            found = parse_text_tool_calls(text, known=names, only_known=True)
            if found.calls:
                calls, text = found.calls, found.text
        usage = getattr(resp, "usage", None)
        pt = getattr(usage, "prompt_tokens", None)
        ct = getattr(usage, "completion_tokens", None)
        cached = getattr(getattr(usage, "prompt_tokens_details", None), "cached_tokens", None)  # OpenAI, vLLM, llama.cpp
        return Completion(
            text=text or None,
            tool_calls=calls,
            usage=Usage(int(pt), int(ct or 0), cached if isinstance(cached, int) else None)
            if isinstance(pt, int) else None,
            finish_reason=getattr(choice, "finish_reason", None),
        )

    def _native_call(self, tc: Any) -> ToolCall:
        call_id = getattr(tc, "id", None) or new_call_id()
        fn = getattr(tc, "function", None)
        if fn is None:  # e.g. a "custom" (free-form) tool call: not something we offer
            custom = getattr(tc, "custom", None)
            name = getattr(custom, "name", None) or "?"
            return ToolCall(call_id, name, None, f"unsupported tool call type {getattr(tc, 'type', None)!r}")
        return self._from_function(call_id, getattr(fn, "name", None) or "", getattr(fn, "arguments", None))

    @staticmethod
    def _from_function(call_id: str, name: str, raw: Any) -> ToolCall:
        parsed = parse_arguments(raw)
        if not name:
            return ToolCall(call_id, "", None, "the tool call names no function",
                            raw_arguments=raw if isinstance(raw, str) else None)
        return ToolCall(call_id, name, parsed.arguments, parsed.error,
                        raw_arguments=raw if isinstance(raw, str) else None)

