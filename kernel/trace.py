"""The trace: every driver exchange and memory operation, in the store's event log.

Each event is a msgpack map (``e``: "create", "open", "user", "llm", "call", "pagein",
"alert", "flush", "block", "message", ...; "context": the tokens of each region of the
context as prepared for an LLM call). Events are buffered while a transaction runs
and written into the store's event log (:class:`vmem.storage.EventLog`) inside that
transaction: a step's events commit or roll back with the step, with no file of their
own to fsync or to fall behind the database.

:func:`vmem.kernel.replay.replay` rebuilds an agent from its trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

import msgpack

from vmem.storage import EventLog, Store, open_store
from vmem.text import clean_text

__all__ = ["PrefixCache", "Trace", "prefix_cache", "read_trace"]


class Trace:
    """The events of the running transaction, written to the event log when it commits."""

    __slots__ = ("_log", "_pending", "_packer")

    def __init__(self, log: EventLog) -> None:
        self._log = log
        self._pending: list[bytes] = []  # packed events
        self._packer = msgpack.Packer(use_bin_type=True)

    def write(self, event: dict[str, Any]) -> None:
        """Record an event (it reaches the log with the transaction's commit). What msgpack cannot
        hold (an integer beyond 64 bits in a model's arguments, an object, a lone surrogate) is
        kept as its text."""
        try:
            packed = self._packer.pack(event)
        except (TypeError, ValueError, OverflowError):  # UnicodeEncodeError is a ValueError
            self._packer.reset()
            packed = self._packer.pack(_packable(event))
        self._pending.append(packed)

    def store(self) -> None:
        """Write the pending events into the log (inside the committing transaction)."""
        if self._pending:
            self._log.extend_packed(self._pending)
            self._pending.clear()

    # transactions (a Participant): a mark is the number of pending events

    def mark(self, level: int) -> int:
        return len(self._pending)

    def restore(self, mark: int) -> None:
        del self._pending[mark:]

    def commit(self) -> None:
        pass


_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1


_PACK_DEPTH = 256  # msgpack's own limit is 512; deeper values are kept as a note, not recursed into


def _packable(value: Any, depth: int = 0) -> Any:
    if isinstance(value, (dict, list, tuple)) and depth >= _PACK_DEPTH:
        return f"(nested deeper than {_PACK_DEPTH} levels: not kept)"
    if isinstance(value, dict):
        return {clean_text(k) if isinstance(k, str) else k if isinstance(k, int) and not isinstance(k, bool)
                else str(k): _packable(v, depth + 1)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_packable(v, depth + 1) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and not _INT_MIN <= value <= _INT_MAX:
        return str(value)
    if isinstance(value, str):
        return clean_text(value)
    if value is None or isinstance(value, (bytes, bool, int, float)):
        return value
    try:
        return clean_text(repr(value)[:10_000])
    except Exception:  # noqa: BLE001 - a repr that fails or recurses
        return f"({type(value).__name__}: no text)"


def read_trace(source: Store | str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The trace's events, in order, from an open store or an agent's directory."""
    if not isinstance(source, (str, os.PathLike)):  # an open store (a MemoryDir or a PgStore)
        yield from source.events
        return
    with open_store(source, create=False, read_only=True) as store:
        yield from list(store.events)


class PrefixCache(NamedTuple):
    """The prompt cache over the calls whose prefix should be stable: step calls that follow a
    step call with no flush between (a flush rewrites the prefix; a summary request displaces
    the server's cache). Only calls whose provider reported cached tokens count."""

    prompt_tokens: int
    cached_tokens: int
    calls: int

    @property
    def ratio(self) -> float | None:
        """Cached / prompt tokens, or None when no call counted."""
        return self.cached_tokens / self.prompt_tokens if self.prompt_tokens else None


def prefix_cache(events: Iterable[dict[str, Any]]) -> PrefixCache:
    """:class:`PrefixCache` of a trace's events (:func:`read_trace`)."""
    prompt = cached = calls = 0
    previous = None
    for e in events:
        if e["e"] == "flush":
            previous = None
        elif e["e"] == "llm":
            usage = (e.get("completion") or {}).get("usage") or {}
            if e.get("purpose") == "step" and previous == "step" and usage.get("cached_tokens") is not None:
                prompt += usage["prompt_tokens"]
                cached += usage["cached_tokens"]
                calls += 1
            previous = e.get("purpose")
    return PrefixCache(prompt, cached, calls)
