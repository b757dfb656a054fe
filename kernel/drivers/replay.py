"""Recording and replaying driver exchanges.

An *exchange* is one driver call as a plain dict (msgpack/JSON-able)::

    {"digest": "<sha256 of the request>",
     "completion": Completion.to_dict() | None,
     "error": {"type": "ContextOverflowError", "message": ..., "status": 400} | None,
     "request": {"messages": [...], "tools": [...]}      # only when recorded with keep_request}

:class:`RecordingDriver` wraps any driver and produces exchanges (the kernel writes them to
its trace); :class:`ReplayDriver` plays them back in order (errors included, so a replayed
run takes the same flush paths), and with ``verify=True`` checks that each request has the
recorded :func:`request_digest`, raising :class:`ReplayMismatch` otherwise.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Any, Callable, Iterable, Mapping, Sequence

from .base import (
    Completion,
    ContextOverflowError,
    Driver,
    DriverError,
    DriverTimeoutError,
    Message,
    ReplayMismatch,
    ScriptExhausted,
    Tool,
)

__all__ = ["RecordingDriver", "ReplayDriver", "exchange", "request_digest"]


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)


def request_digest(messages: Sequence[Message], tools: Sequence[Tool]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``{"messages", "tools"}``: key order and
    tuple-vs-list do not matter, so a request survives a msgpack round trip unchanged."""
    payload = _canonical({"messages": list(messages), "tools": list(tools)})
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


_ERRORS: dict[str, type[DriverError]] = {
    "ContextOverflowError": ContextOverflowError,
    "DriverTimeoutError": DriverTimeoutError,
    "DriverError": DriverError,
}


def exchange(
    messages: Sequence[Message],
    tools: Sequence[Tool],
    outcome: Completion | DriverError,
    *,
    keep_request: bool = False,
    digest: str | None = None,
) -> dict[str, Any]:
    """One exchange dict for a request and its outcome (a completion or a driver error).

    ``digest``: the request's digest when the caller has it already (the kernel
    keeps one per message); default :func:`request_digest`.
    """
    rec: dict[str, Any] = {"digest": digest if digest is not None else request_digest(messages, tools),
                           "completion": None, "error": None}
    if isinstance(outcome, Completion):
        rec["completion"] = outcome.to_dict()
    else:
        kind = next((name for name, cls in _ERRORS.items() if type(outcome) is cls), "DriverError")
        rec["error"] = {"type": kind, "message": outcome.message, "status": outcome.status}
    if keep_request:
        rec["request"] = {"messages": copy.deepcopy(list(messages)), "tools": copy.deepcopy(list(tools))}
    return rec


def _first_difference(recorded: Mapping[str, Any], messages: Sequence[Message], tools: Sequence[Tool]) -> str:
    rec_msgs = list(recorded.get("messages") or [])
    if _canonical(list(recorded.get("tools") or [])) != _canonical(list(tools)):
        return "the tools differ"
    for k, (a, b) in enumerate(zip(rec_msgs, messages)):
        if _canonical(a) != _canonical(b):
            return f"message {k} differs: recorded {_canonical(a)[:160]} but got {_canonical(b)[:160]}"
    return f"recorded {len(rec_msgs)} messages but got {len(messages)}"


class ReplayDriver(Driver):
    """Returns recorded completions (or raises recorded errors) in order.

    Args:
        exchanges: exchange dicts (see the module docstring), e.g. read back from a trace.
        verify: check each request's digest against the recording.
        digest: the function the recording's digests were made with (default
            :func:`request_digest`; the kernel records with its own, faster one).
    """

    def __init__(self, exchanges: Iterable[Mapping[str, Any]], *, verify: bool = True,
                 digest: Callable[[Sequence[Message], Sequence[Tool]], str] = request_digest) -> None:
        self._exchanges = [dict(e) for e in exchanges]
        self.verify = verify
        self._digest = digest
        self.position = 0
        """Index of the next exchange to replay."""

    @property
    def remaining(self) -> int:
        """Exchanges not yet replayed."""
        return len(self._exchanges) - self.position

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """The next recorded outcome.

        Raises:
            ScriptExhausted: every recorded exchange has been replayed.
            ReplayMismatch: ``verify`` is on and the request differs from the recording
                (the position does not advance).
            DriverError (or its recorded subclass): the recorded exchange was an error.
        """
        if self.position >= len(self._exchanges):
            raise ScriptExhausted(
                f"ReplayDriver: all {len(self._exchanges)} recorded exchanges were replayed; "
                f"request #{self.position + 1} has no recording",
                attempts=0,
            )
        rec = self._exchanges[self.position]
        if self.verify:
            actual = self._digest(messages, tools)
            expected = str(rec.get("digest"))
            if actual != expected:
                detail = _first_difference(rec["request"], messages, tools) if rec.get("request") else "the request differs"
                raise ReplayMismatch(
                    f"ReplayDriver: request #{self.position + 1} does not match the recording: {detail} "
                    f"(digest {actual[:12]}, recorded {expected[:12]})",
                    index=self.position, expected=expected, actual=actual,
                )
        self.position += 1
        err = rec.get("error")
        if err:
            cls = _ERRORS.get(str(err.get("type")), DriverError)
            raise cls(str(err.get("message")), status=err.get("status"), attempts=0)
        if rec.get("completion") is None:
            raise DriverError(f"ReplayDriver: exchange {self.position - 1} holds neither a completion nor an error")
        return Completion.from_dict(rec["completion"])

    async def acomplete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """As :meth:`complete` (no I/O, no thread)."""
        return self.complete(messages, tools)


class RecordingDriver(Driver):
    """Wraps a driver and records every exchange (completions and driver errors).

    Args:
        inner: the driver that does the work.
        sink: called with each exchange dict as it happens (e.g. to append to a trace).
        keep_request: also store the full request in each exchange (bigger traces, but a
            replay mismatch can then say which message differs).
    """

    def __init__(
        self,
        inner: Driver,
        *,
        sink: Callable[[dict[str, Any]], None] | None = None,
        keep_request: bool = False,
    ) -> None:
        self.inner = inner
        self.sink = sink
        self.keep_request = keep_request
        self.exchanges: list[dict[str, Any]] = []

    def _log(self, messages: Sequence[Message], tools: Sequence[Tool], outcome: Completion | DriverError) -> None:
        rec = exchange(messages, tools, outcome, keep_request=self.keep_request)
        self.exchanges.append(rec)
        if self.sink is not None:
            self.sink(rec)

    def complete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """The inner driver's completion, recorded."""
        try:
            out = self.inner.complete(messages, tools)
        except DriverError as exc:
            self._log(messages, tools, exc)
            raise
        self._log(messages, tools, out)
        return out

    async def acomplete(self, messages: Sequence[Message], tools: Sequence[Tool]) -> Completion:
        """The inner driver's async completion, recorded."""
        try:
            out = await self.inner.acomplete(messages, tools)
        except DriverError as exc:
            self._log(messages, tools, exc)
            raise
        self._log(messages, tools, out)
        return out

    def close(self) -> None:
        """Close the inner driver."""
        self.inner.close()

    async def aclose(self) -> None:
        """Close the inner driver."""
        await self.inner.aclose()
