"""ScriptedDriver: completions from a script, for tests and offline runs.

The script is either a sequence of responses, used in order, or a responder callable
``(messages, tools) -> response``.  A response may be:

* a :class:`Completion` (or a :class:`ToolCall`, for a one-call completion);
* a ``str``: a text-only completion;
* a dict with any of ``text`` / ``tool_calls`` / ``usage`` / ``finish_reason``: a
  completion (tool calls as in the next item; usage as a dict or a 2-tuple);
* a dict ``{"name": ..., "arguments": ...}`` (or ``"function"`` for ``"name"``): a
  one-call completion.  ``arguments`` may be a dict, or a string that is parsed like a
  provider's (so a script can feed the kernel malformed JSON); ids default to
  ``call_<request>_<index>``;
* a list of such call dicts: several calls;
* an exception instance: raised at that point (e.g. ``ContextOverflowError("...")`` to
  drive the kernel's flush path).

Every request is recorded in :attr:`ScriptedDriver.requests` (deep copies; ``record=False``
keeps none, for long runs such as a fleet of workers, where the copies would cost a deep copy
of the context per call and grow without bound).  Running out of
script raises :class:`ScriptExhausted`, naming the request that found it empty.
"""

from __future__ import annotations

import copy
import inspect
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from .base import Completion, Driver, Message, ScriptExhausted, Tool, ToolCall, Usage
from .lenient_json import parse_arguments

__all__ = ["Response", "Responder", "ScriptedDriver", "ScriptedRequest", "as_completion"]

Response = Union[Completion, ToolCall, str, Mapping[str, Any], Sequence[Mapping[str, Any]], BaseException]
"""Anything :func:`as_completion` accepts (and an exception, which is raised)."""

Responder = Callable[[list[Message], list[Tool]], Any]
"""``(messages, tools) -> Response`` (or an awaitable of one, under ``acomplete``)."""

UsageFn = Callable[[list[Message], list[Tool], Completion], Usage]


@dataclass(frozen=True)
class ScriptedRequest:
    """A request a ScriptedDriver received (deep copies, safe to keep)."""

    messages: list[Message]
    tools: list[Tool]


def _as_call(item: ToolCall | Mapping[str, Any], default_id: str) -> ToolCall:
    if isinstance(item, ToolCall):
        return item
    if not isinstance(item, Mapping):
        raise TypeError(f"a scripted tool call must be a ToolCall or a dict, not {type(item).__name__}")
    name = item.get("name", item.get("function"))
    if not isinstance(name, str) or not name:
        raise TypeError(f"a scripted tool call needs a 'name': {dict(item)!r}")
    call_id = str(item.get("id") or default_id)
    if item.get("error") is not None and item.get("arguments") is None:
        return ToolCall(call_id, name, None, str(item["error"]), raw_arguments=item.get("raw_arguments"))
    raw = item.get("arguments")
    parsed = parse_arguments(raw)
    return ToolCall(call_id, name, parsed.arguments, parsed.error,
                    raw_arguments=raw if isinstance(raw, str) else None)


def _as_usage(u: Any) -> Usage | None:
    if u is None or isinstance(u, Usage):
        return u
    if isinstance(u, Mapping):
        return Usage.from_dict(u)
    if isinstance(u, (tuple, list)) and len(u) == 2:
        return Usage(int(u[0]), int(u[1]))
    raise TypeError(f"scripted usage must be a Usage, a dict or a (prompt, completion) pair, not {u!r}")


_COMPLETION_KEYS = frozenset({"text", "tool_calls", "usage", "finish_reason"})


def as_completion(item: Any, *, request: int = 0) -> Completion:
    """Turn a scripted response into a :class:`Completion` (see the module docstring).
    ``request`` numbers the default tool-call ids.  Exceptions are raised, not converted.

    Raises:
        TypeError: ``item`` is none of the accepted forms.
    """
    if isinstance(item, BaseException):
        raise item
    if isinstance(item, Completion):
        return item
    if isinstance(item, ToolCall):
        return Completion(tool_calls=[item], finish_reason="tool_calls")
    if isinstance(item, str):
        return Completion(text=item, finish_reason="stop")
    if isinstance(item, Mapping):
        if _COMPLETION_KEYS & set(item):
            calls = [_as_call(c, f"call_{request}_{k}") for k, c in enumerate(item.get("tool_calls") or ())]
            return Completion(
                text=item.get("text"),
                tool_calls=calls,
                usage=_as_usage(item.get("usage")),
                finish_reason=item.get("finish_reason", "tool_calls" if calls else "stop"),
            )
        return Completion(tool_calls=[_as_call(item, f"call_{request}_0")], finish_reason="tool_calls")
    if isinstance(item, (list, tuple)) and item:
        calls = [_as_call(c, f"call_{request}_{k}") for k, c in enumerate(item)]
        return Completion(tool_calls=calls, finish_reason="tool_calls")
    raise TypeError(f"cannot turn {type(item).__name__} {item!r} into a Completion")


class ScriptedDriver(Driver):
    """A driver that answers from a script (see the module docstring).

    Args:
        script: the responses in order, or a responder callable.
        usage: a :class:`Usage` to attach to completions that carry none, or a callable
            ``(messages, tools, completion) -> Usage`` computing one.
        record: keep every request in :attr:`requests` (default); False keeps none (a
            responder still gets the request's messages and tools).
    """

    def __init__(self, script: Iterable[Any] | Responder, *, usage: Usage | UsageFn | None = None,
                 record: bool = True) -> None:
        self._responder: Responder | None = None
        self._script: deque[Any] = deque()
        if callable(script) and not isinstance(script, (list, tuple, deque)):
            self._responder = script
        else:
            self._script.extend(script)
        self._usage = usage
        self.requests: list[ScriptedRequest] = []
        self.record = record
        self._served = 0
        self._requested = 0  # requests seen, recorded or not (the default call ids count them)

    @property
    def remaining(self) -> int | None:
        """Responses left in the script (None for a responder, which never runs out)."""
        return None if self._responder is not None else len(self._script)

    def push(self, *responses: Any) -> None:
        """Append responses to the script."""
        if self._responder is not None:
            raise TypeError("ScriptedDriver: cannot push onto a responder-driven script")
        self._script.extend(responses)

    def _record(self, messages: Sequence[Message], tools: Sequence[Tool]) -> ScriptedRequest:
        self._requested += 1
        if not self.record:
            return ScriptedRequest(list(messages), list(tools))
        req = ScriptedRequest(copy.deepcopy(list(messages)), copy.deepcopy(list(tools)))
        self.requests.append(req)
        return req

    def _next_scripted(self, req: ScriptedRequest) -> Any:
        if not self._script:
            last = req.messages[-1] if req.messages else {}
            content = str(last.get("content"))[:80]
            raise ScriptExhausted(
                f"ScriptedDriver: the script ran out after {self._served} responses; request "
                f"#{self._requested} (last message {last.get('role')!r}: {content!r}) has no answer",
                attempts=0,
            )
        self._served += 1
        return self._script.popleft()

    def _finish(self, req: ScriptedRequest, item: Any) -> Completion:
        if item is None:
            raise TypeError("ScriptedDriver: the responder returned None")
        completion = as_completion(item, request=self._requested)
        if completion.usage is None and self._usage is not None:
            usage = self._usage if isinstance(self._usage, Usage) else self._usage(req.messages, req.tools, completion)
            completion = Completion(completion.text, completion.tool_calls, usage, completion.finish_reason)
        return completion

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """The next scripted response as a Completion.

        Raises:
            ScriptExhausted: the script has no response left.
            BaseException: whatever exception the script holds at this point.
        """
        req = self._record(messages, tools)
        if self._responder is not None:
            item = self._responder(req.messages, req.tools)
            if inspect.isawaitable(item):
                close = getattr(item, "close", None)
                if close is not None:
                    close()  # do not leak a never-awaited coroutine
                raise TypeError("ScriptedDriver: an async responder needs acomplete()")
        else:
            item = self._next_scripted(req)
        return self._finish(req, item)

    async def acomplete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """As :meth:`complete`; an async responder is awaited."""
        req = self._record(messages, tools)
        if self._responder is not None:
            item = self._responder(req.messages, req.tools)
            if inspect.isawaitable(item):
                item = await item
        else:
            item = self._next_scripted(req)
        return self._finish(req, item)
