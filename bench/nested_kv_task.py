"""MemGPT's nested key-value retrieval task: a multi-hop page-fault workload.

The task (MemGPT, arXiv 2310.08560, section 3.2.2, after the KV retrieval task
of Liu et al., "Lost in the Middle"): 140 pairs of UUIDs are stored in archival
memory, one passage per pair, as the text ``Key-value pair: key = K, value = V``.
A chain of ``L`` pairs is made by setting the value of each pair to the key of
the next one (the MemGPT construction, :func:`nest`). The agent is asked for the
value of the first key; since a value may itself be a key, it must look keys up
until it reaches a value that is not a key: ``L`` lookups, each one a page fault
(an ``archival_memory_search`` whose results are paged into the working set).

Interface:

- :func:`generate_pairs` -- ``n`` UUID pairs from a seeded ``random.Random``.
- :func:`nest` / :func:`follow` -- the MemGPT construction and its ground truth.
- :class:`NestedKVTask`, :func:`make_task`, :func:`generate_task` -- one question:
  the nested pairs, the passages to store, the question, the answer.
- :class:`KVLookupPolicy` -- a scripted policy (not a model) for
  :class:`~vmem.kernel.drivers.ScriptedDriver` that follows the lookup protocol by
  reading only the compiled context it is given.

The lookup protocol of :class:`KVLookupPolicy`, one LLM step per line::

    user: "... provide the value for the following key: K1. ..."
      -> archival_memory_search(query=K1, request_heartbeat=true)
    tool: results; the pair "key = K1, value = V1" is in the context
      -> archival_memory_search(query=V1, request_heartbeat=true)
    ...
    tool: results; no pair has key = V_L (the value is not a key)
      -> send_message(message=V_L)

so a chain of ``L`` lookups makes ``L + 1`` searches: the last one is the miss
that shows the final value is not a key. The policy keeps no state between
calls: it reads the current key from the last search call in the context, and
the pair from that search's result, resolving pages listed ``(in context)`` to
their full line in the working-set message. The data files of the original
experiment are read by ``bench/nested_kv.py``, never by this module.
"""

from __future__ import annotations

import json
import random
import re
import uuid
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from vmem.kernel.drivers.base import Completion, Message, Tool, ToolCall

__all__ = [
    "KVLookupPolicy",
    "NestedKVTask",
    "PAIR_TEMPLATE",
    "QUESTION_TEMPLATE",
    "SYSTEM_PROMPT",
    "follow",
    "generate_pairs",
    "generate_task",
    "make_task",
    "nest",
]

#: How one pair is stored in archival memory (MemGPT's ``document_string``).
PAIR_TEMPLATE = "Key-value pair: key = {key}, value = {value}"

#: The question, as MemGPT's experiment worded it for the nested task.
QUESTION_TEMPLATE = (
    "I've given you a list of key-value pairs which you can find in your archival memory, all keys and "
    "values are 128-bit UUIDs, and your task is to return the value associated with the specified key. "
    "If a value itself is also a key, return the value of that key (do a nested lookup). For example, "
    "if the value of 'x' is 'y', but 'y' is also a key, return the value of key 'y'. Your task is to "
    "provide the value for the following key: {key}. Answer only with the value, nothing else."
)

#: System instructions for an agent that answers the task (MemGPT's persona for it, condensed).
SYSTEM_PROMPT = (
    "You answer questions about key-value pairs stored in your archival memory. The answer is always "
    "in archival memory: search it with archival_memory_search. Do not stop searching until you have "
    "verified that the value is not itself a key; then answer with send_message."
)

_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_QUESTION_KEY = re.compile(r"following key:\s*(" + _UUID + ")")
_PAIR = re.compile(r"Key-value pair: key = (" + _UUID + r"), value = (" + _UUID + ")")
_PAGE_REF = re.compile(r"\[archival (0x[0-9a-f]+)")
_WORKSET_OPEN = "<working_set"
_SEARCH = "archival_memory_search"
_ANSWER = "send_message"


# ---------------------------------------------------------------- the task


def generate_pairs(n: int = 140, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` distinct (key, value) pairs of version-4 UUIDs drawn from ``random.Random(seed)``.

    No UUID occurs twice among the ``2 n`` keys and values, so a chain can only
    continue where :func:`nest` makes it continue.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < 2 * n:
        u = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        if u not in seen:
            seen.add(u)
            out.append(u)
    return list(zip(out[0::2], out[1::2]))


def nest(pairs: Sequence[Sequence[str]], indices: Sequence[int]) -> list[tuple[str, str]]:
    """MemGPT's construction: a copy of ``pairs`` where the value of pair ``indices[j]``
    is the key of pair ``indices[j + 1]`` (for each ``j``), making a chain of
    ``len(indices)`` lookups that starts at the key of pair ``indices[0]``.

    Raises ValueError on an index out of range or repeated (a repeat would make a cycle).
    """
    out = [(str(k), str(v)) for k, v in pairs]
    if not indices:
        raise ValueError("a chain needs at least one index")
    if len(set(indices)) != len(indices):
        raise ValueError(f"chain indices must be distinct, got {list(indices)}")
    for i in indices:
        if not 0 <= i < len(out):
            raise ValueError(f"chain index {i} is out of range for {len(out)} pairs")
    for a, b in zip(indices, indices[1:]):
        out[a] = (out[a][0], out[b][0])
    return out


def follow(pairs: Iterable[Sequence[str]], key: str) -> tuple[str, int]:
    """The final value reached from ``key`` by following values that are keys, and
    the number of lookups made (MemGPT's ``get_nested_key``). Raises KeyError when
    ``key`` is not a key, ValueError on a cycle."""
    table = {k: v for k, v in pairs}
    value = table[key]
    hops = 1
    while value in table:
        if hops > len(table):
            raise ValueError(f"the chain from {key} is a cycle")
        value = table[value]
        hops += 1
    return value, hops


@dataclass(frozen=True)
class NestedKVTask:
    """One question of the nested KV task."""

    pairs: tuple[tuple[str, str], ...]  #: every (key, value) pair, after nesting
    chain: tuple[int, ...]  #: indices of the chain's pairs, in lookup order
    key: str  #: the key asked about (the key of pair ``chain[0]``)
    answer: str  #: the true final value

    @property
    def levels(self) -> int:
        """Lookups needed to answer (the chain's length)."""
        return len(self.chain)

    @property
    def passages(self) -> list[str]:
        """The pairs as archival passages (:data:`PAIR_TEMPLATE`), in record order."""
        return [PAIR_TEMPLATE.format(key=k, value=v) for k, v in self.pairs]

    @property
    def question(self) -> str:
        """The user message that asks the question (:data:`QUESTION_TEMPLATE`)."""
        return QUESTION_TEMPLATE.format(key=self.key)


def make_task(pairs: Sequence[Sequence[str]], indices: Sequence[int]) -> NestedKVTask:
    """The question built from ``pairs`` (e.g. a record's ``ordered_kv_records``) and a
    chain of indices (e.g. one line of MemGPT's orderings files).

    Raises ValueError if the chain is not exactly ``len(indices)`` lookups long
    (possible only when the data has repeated UUIDs).
    """
    nested = nest(pairs, indices)
    key = nested[indices[0]][0]
    answer, hops = follow(nested, key)
    if hops != len(indices):
        raise ValueError(f"the chain {list(indices)} takes {hops} lookups, not {len(indices)}")
    return NestedKVTask(tuple(nested), tuple(int(i) for i in indices), key, answer)


def generate_task(levels: int, seed: int = 0, n_pairs: int = 140) -> NestedKVTask:
    """A generated question: :func:`generate_pairs` (``n_pairs``, ``seed``) and a chain of
    ``levels`` distinct indices drawn from the same seeded generator."""
    if not 1 <= levels <= n_pairs:
        raise ValueError(f"levels must be between 1 and {n_pairs}, got {levels}")
    pairs = generate_pairs(n_pairs, seed)
    indices = random.Random(f"chain-{seed}-{levels}").sample(range(n_pairs), levels)
    return make_task(pairs, indices)


# ---------------------------------------------------------------- the scripted policy


def _call_of(messages: Sequence[Message], tool_call_id: str, before: int) -> Mapping[str, Any] | None:
    """The ``function`` entry of the assistant tool call ``tool_call_id`` made before ``before``."""
    for m in reversed(messages[:before]):
        if m.get("role") == "assistant":
            for c in m.get("tool_calls") or ():
                if c.get("id") == tool_call_id:
                    return c.get("function")
    return None


def _working_set(messages: Sequence[Message]) -> dict[str, str]:
    """Page id (``0x...``) -> full line, from the working-set system message."""
    lines: dict[str, str] = {}
    for m in messages:
        content = m.get("content")
        if m.get("role") == "system" and isinstance(content, str) and content.startswith(_WORKSET_OPEN):
            for line in content.splitlines()[1:-1]:
                ref = _PAGE_REF.match(line)
                if ref:
                    lines[ref.group(1)] = line
    return lines


class KVLookupPolicy:
    """A scripted policy that answers the nested KV task by the protocol in the module docstring.

    Use as the responder of a ScriptedDriver: ``ScriptedDriver(KVLookupPolicy())``.
    It decides from the compiled context alone (no memory between calls), so a
    flush that evicts earlier steps does not confuse it as long as the last
    search call and its result are still in the queue (the kernel never evicts
    the last ``keep_last`` messages). Summary requests (an empty tool list) are
    answered with a deterministic one-line summary.

    Attributes:
        steps: step requests answered; summaries: summary requests answered.
    """

    def __init__(self) -> None:
        self.steps = 0
        self.summaries = 0

    def __call__(self, messages: list[Message], tools: list[Tool]) -> Completion:
        """The next completion for a compiled context (see the class docstring)."""
        if not tools:
            self.summaries += 1
            return Completion(text=self._summary(messages), finish_reason="stop")
        self.steps += 1
        n = self.steps
        for pos in range(len(messages) - 1, -1, -1):
            m = messages[pos]
            role = m.get("role")
            if role == "system":  # memory alerts, statistics, the working set: not a turn
                continue
            if role == "user":
                found = _QUESTION_KEY.search(str(m.get("content") or ""))
                if found is None:
                    return self._answer(n, "I can only answer questions that name a key.")
                return self._search(n, found.group(1))
            if role == "tool":
                call = _call_of(messages, str(m.get("tool_call_id")), pos)
                if call is None or call.get("name") != _SEARCH:
                    break
                query = json.loads(call.get("arguments") or "{}").get("query", "")
                value = self._lookup(query, str(m.get("content") or ""), messages)
                return self._search(n, value) if value is not None else self._answer(n, query)
            break
        return self._answer(n, "I could not find the question in my context.")

    @staticmethod
    def _lookup(key: str, result: str, messages: Sequence[Message]) -> str | None:
        """The value of the pair whose key is ``key`` among the pages a search result shows."""
        try:
            body = json.loads(result)
        except ValueError:
            return None
        if body.get("status") != "OK":
            return None
        working_set: dict[str, str] | None = None
        for line in str(body.get("message", "")).splitlines():
            if not line.startswith("- "):
                continue
            if line.endswith("(in context)"):  # a snippet: the full line is in the working set
                ref = _PAGE_REF.search(line)
                if ref is None:
                    continue
                if working_set is None:
                    working_set = _working_set(messages)
                line = working_set.get(ref.group(1), "")
            for k, v in _PAIR.findall(line):
                if k == key:
                    return v
        return None

    @staticmethod
    def _search(n: int, key: str) -> Completion:
        return Completion(tool_calls=[ToolCall(f"kv-{n}", _SEARCH, {"query": key, "request_heartbeat": True})],
                          finish_reason="tool_calls")

    @staticmethod
    def _answer(n: int, text: str) -> Completion:
        return Completion(tool_calls=[ToolCall(f"kv-{n}", _ANSWER, {"message": text})], finish_reason="tool_calls")

    @staticmethod
    def _summary(messages: Sequence[Message]) -> str:
        """A deterministic summary: how many lookups the folded messages (and the previous summary) hold."""
        request = str(messages[-1].get("content") or "") if messages else ""
        previous = re.search(r"The agent has made (\d+) archival searches", request)
        searches = (int(previous.group(1)) if previous else 0) + request.count(f"{_SEARCH}(")
        return (f"The agent has made {searches} archival searches so far, following a chain of "
                f"key-value pairs stored in archival memory.")
