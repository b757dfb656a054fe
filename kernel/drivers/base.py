"""The driver interface: what the kernel needs from an LLM, and nothing more.

A driver turns a compiled context (OpenAI chat-format message dicts plus OpenAI tool
schemas) into a :class:`Completion`: optional text, a list of :class:`ToolCall`, and the
provider's token :class:`Usage` when it reports one.

Writing a driver
----------------
A custom driver is one small class with a synchronous ``complete``::

    class EchoDriver(Driver):
        def complete(self, messages, tools):
            return Completion(text=messages[-1]["content"])

``acomplete`` then runs ``complete`` in a worker thread.  The built-in drivers override
``acomplete`` with a real asynchronous implementation.

Exceptions
----------
Every failure to obtain a completion is a :class:`DriverError`::

    DriverError                  no completion; .status (HTTP status or None), .attempts
    ├── ContextOverflowError     the provider says the prompt is too long: the kernel flushes
    │                            (evicts + summarises) and asks again; never retried here
    ├── DriverTimeoutError       no answer within the timeout (also a builtin TimeoutError)
    ├── ScriptExhausted          a ScriptedDriver / ReplayDriver has no response left
    └── ReplayMismatch           a ReplayDriver was asked something the recording did not ask

Rate limits (429), server errors (5xx) and dropped connections are retried inside the
driver with exponential backoff; only when the attempts are exhausted do they surface, as a
plain ``DriverError`` whose ``status`` tells which.  Malformed tool-call arguments are *not*
exceptions: they come back as a ``ToolCall`` whose ``error`` says why, so the kernel can
answer the LLM with a function error.
"""

from __future__ import annotations

import abc
import asyncio
import json
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Mapping, Sequence

from vmem.errors import VmemError

__all__ = [
    "Completion",
    "ContextOverflowError",
    "Driver",
    "DriverError",
    "DriverTimeoutError",
    "Message",
    "ReplayMismatch",
    "ScriptExhausted",
    "Tool",
    "ToolCall",
    "Usage",
]

Message = dict[str, Any]
"""One OpenAI chat-format message: ``{"role": ..., "content": ..., ...}``."""

Tool = dict[str, Any]
"""One OpenAI tool schema: ``{"type": "function", "function": {name, description, parameters}}``."""


# --------------------------------------------------------------------------- exceptions


class DriverError(VmemError):
    """A driver could not produce a completion (a :class:`vmem.VmemError`, like every error vmem raises).

    Attributes:
        status: the provider's HTTP status code when there was one (429 after exhausted
            rate-limit retries, 500 after exhausted server-error retries, ...), else None.
        attempts: how many requests were sent before giving up (0 when none was sent).
    """

    def __init__(self, message: str, *, status: int | None = None, attempts: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.attempts = attempts


class ContextOverflowError(DriverError):
    """The provider rejected the prompt as longer than the model's context window.

    The kernel treats this like reaching the flush watermark: evict, summarise, retry.
    """


class DriverTimeoutError(DriverError, TimeoutError):
    """The provider did not answer within the configured timeout."""


class ScriptExhausted(DriverError):
    """A scripted or replayed driver was asked for more completions than it holds."""


class ReplayMismatch(DriverError):
    """A :class:`~vmem.kernel.drivers.replay.ReplayDriver` received a request that differs from
    the recorded one (compared by :func:`~vmem.kernel.drivers.replay.request_digest`).

    Attributes:
        index: position of the exchange in the recording.
        expected: digest recorded for that exchange.
        actual: digest of the request actually received.
    """

    def __init__(self, message: str, *, index: int, expected: str, actual: str) -> None:
        super().__init__(message, attempts=0)
        self.index = index
        self.expected = expected
        self.actual = actual


# --------------------------------------------------------------------------- data types


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported by the provider for one completion."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int | None = None  #: prompt tokens the provider served from its prompt cache, if it says

    @property
    def total_tokens(self) -> int:
        """prompt_tokens + completion_tokens."""
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        """Plain dict (msgpack/JSON-able); ``cached_tokens`` only when known."""
        d = {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}
        if self.cached_tokens is not None:
            d["cached_tokens"] = self.cached_tokens
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Usage:
        """Inverse of :meth:`to_dict`."""
        cached = d.get("cached_tokens")
        return cls(int(d["prompt_tokens"]), int(d["completion_tokens"]), int(cached) if cached is not None else None)


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call requested by the LLM.

    Exactly one of ``arguments`` / ``error`` is set:

    * ``arguments``: the parsed arguments object (possibly repaired from slightly
      malformed JSON, see :mod:`vmem.kernel.drivers.lenient_json`);
    * ``error``: why the arguments could not be parsed.  The kernel answers the call with
      a function error carrying this text instead of executing it.

    ``raw_arguments`` keeps the arguments text exactly as the model produced it (None when
    the model produced an object, or for calls built in code).
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    error: str | None = None
    raw_arguments: str | None = None

    def __post_init__(self) -> None:
        if (self.arguments is None) == (self.error is None):
            raise ValueError("ToolCall: exactly one of arguments and error must be set")

    def arguments_json(self) -> str:
        """The arguments as a JSON string for an OpenAI ``tool_calls`` entry: the parsed
        arguments re-serialised, or the raw text when they could not be parsed."""
        if self.arguments is not None:
            return json.dumps(self.arguments, ensure_ascii=False)
        return self.raw_arguments if self.raw_arguments is not None else ""

    def to_openai(self) -> dict[str, Any]:
        """This call as an entry of an assistant message's ``tool_calls`` list."""
        return {
            "id": self.id,
            "type": "function",
            "function": {"name": self.name, "arguments": self.arguments_json()},
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (msgpack/JSON-able)."""
        return {
            "id": self.id,
            "name": self.name,
            "arguments": self.arguments,
            "error": self.error,
            "raw_arguments": self.raw_arguments,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ToolCall:
        """Inverse of :meth:`to_dict`."""
        args = d.get("arguments")
        return cls(
            id=str(d["id"]),
            name=str(d["name"]),
            arguments=dict(args) if args is not None else None,
            error=d.get("error"),
            raw_arguments=d.get("raw_arguments"),
        )


@dataclass(frozen=True, slots=True)
class Completion:
    """What the LLM answered: text and/or tool calls, plus the provider's usage.

    Attributes:
        text: the assistant's text (for a JSON-fallback model: the text outside the
            function-call JSON), or None when there was none.
        tool_calls: the function calls, in the order the model made them.
        usage: provider-reported token usage, or None when the provider did not report it.
        finish_reason: the provider's finish reason ("stop", "tool_calls", "length", ...)
            when known; "length" means the output was cut at the token limit.
    """

    text: str | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    usage: Usage | None = None
    finish_reason: str | None = None

    def to_message(self) -> Message:
        """This completion as the assistant message to append to the chat history."""
        msg: Message = {"role": "assistant", "content": self.text}
        if self.tool_calls:
            msg["tool_calls"] = [tc.to_openai() for tc in self.tool_calls]
        return msg

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of str/int/None/list/dict only, so it serialises with msgpack."""
        return {
            "text": self.text,
            "tool_calls": [tc.to_dict() for tc in self.tool_calls],
            "usage": self.usage.to_dict() if self.usage is not None else None,
            "finish_reason": self.finish_reason,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Completion:
        """Inverse of :meth:`to_dict`; missing keys take their defaults."""
        usage = d.get("usage")
        return cls(
            text=d.get("text"),
            tool_calls=[ToolCall.from_dict(tc) for tc in d.get("tool_calls") or ()],
            usage=Usage.from_dict(usage) if usage is not None else None,
            finish_reason=d.get("finish_reason"),
        )


# --------------------------------------------------------------------------- the driver


class Driver(abc.ABC):
    """Base class of LLM drivers.  Subclasses implement :meth:`complete`; see the module
    docstring.  Drivers are also (async) context managers that :meth:`close` themselves."""

    @abc.abstractmethod
    def complete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """Ask the LLM for the next completion of ``messages``, offering ``tools``.

        Raises:
            ContextOverflowError: the prompt does not fit the model's context window.
            DriverTimeoutError: the provider did not answer in time.
            DriverError: any other failure (after the driver's own retries).
        """

    async def acomplete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """Asynchronous :meth:`complete`.  This default runs :meth:`complete` in a worker
        thread so that a small synchronous custom driver works in async code too."""
        return await asyncio.to_thread(self.complete, messages, tools)

    def close(self) -> None:
        """Release connections.  The default does nothing."""

    async def aclose(self) -> None:
        """Asynchronous :meth:`close`.  The default calls :meth:`close`."""
        self.close()

    def __enter__(self) -> Driver:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Driver:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
